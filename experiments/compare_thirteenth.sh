#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the thirteenth pass (issue 5): ours@small-model-crossfit-both
# (configs/optimizer/small-model-crossfit-both.yaml: cross-fitting, the balanced objective, and two start
# trials, the first fixed demo set then the kNN prompt, start: demos+knn) on the five classification tasks,
# seeds 0-2. Same output directory and --resume as the earlier passes; finished rows are skipped, so the
# same command continues a cut-short run. The verdict is printed with this preset as ours (--ours).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for task in bbh_navigate sst2 trec ag_news bbh_sports; do
  for seed in 0 1 2; do
    run "$task" "$seed" ours@small-model-crossfit-both $(sizes "$task") --ours ours@small-model-crossfit-both
  done
done
