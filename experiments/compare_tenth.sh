#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the tenth pass (issue 5): ours@small-model-balanced, the
# small-model preset with the label-balanced objective (optimizer.objective: balanced,
# configs/optimizer/small-model-balanced.yaml), on BBH navigate, seeds 0-2: the task whose 60 validation
# examples (42 No, 18 Yes) rank prompts that answer No first. It scored below the small-model preset
# there, so the other tasks were not run with it. Same output directory and --resume as the earlier
# passes; finished rows are skipped, so the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for seed in 0 1 2; do run bbh_navigate "$seed" ours@small-model-balanced $(sizes bbh_navigate); done
