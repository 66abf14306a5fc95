#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the twelfth pass (issue 5): ours@small-model-crossfit
# (configs/optimizer/small-model-crossfit.yaml) on SST-2 (seeds 0-2), where its first trial, the kNN
# prompt, reached MIPROv2 light's validation score late (the thirteenth pass, compare_thirteenth.sh, adds
# the first fixed demo set as a start trial before it). Same output directory and --resume as the earlier
# passes; finished rows are skipped, so the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for seed in 0 1 2; do run sst2 "$seed" ours@small-model-crossfit $(sizes sst2) --ours ours@small-model-crossfit; done
