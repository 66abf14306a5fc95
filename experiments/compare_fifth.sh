#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the fifth pass (issue 5), in the order they ran:
# - ours@small-model again on the five classification tasks, seeds 0-2: its first trial (start: demos)
#   now takes the whole first fixed demo set (start_demos defaults to max_demos) instead of its first 4
#   demos. The earlier rows were relabelled ours@small-model-start4 (an ablation, same preset with
#   start_demos: 4). GSM8K (max_demos 4) runs the same slots either way, so its rows stand;
# - BootstrapFewShotWithRandomSearch on AG News seeds 1 and 2 (the other tasks ran in compare_fourth.sh).
# Same output directory, LM cache and --resume as the earlier passes: finished rows are skipped, so the
# same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
ours_classification
run ag_news "1 2" bfrs
