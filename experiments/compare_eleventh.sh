#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the eleventh pass (issue 5): ours@small-model-crossfit,
# the small-model preset with cross-fitting (optimizer.crossfit: 60, trials also scored on 60 training
# examples, each answered without itself among the demos) under the label-balanced objective, with the
# kNN prompt as the first trial (start: knn; configs/optimizer/small-model-crossfit.yaml), on the BBH
# tasks; ours@small-model-crossfit-demos is the same with start: demos. Same output directory and
# --resume as the earlier passes; finished rows are skipped, so the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for task in bbh_navigate bbh_sports; do
  for seed in 0 1 2; do run "$task" "$seed" ours@small-model-crossfit $(sizes "$task"); done
done
for seed in 0 1 2; do run bbh_navigate "$seed" ours@small-model-crossfit-demos $(sizes bbh_navigate); done
