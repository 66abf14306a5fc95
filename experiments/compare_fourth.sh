#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the fourth pass (issue 5), in the order they ran:
# - GSM8K seed 2 with MIPROv2 light and ours@small-model (ours' call budget is read from the MIPROv2
#   light row, so that one runs first), completing three seeds on GSM8K;
# - BootstrapFewShotWithRandomSearch on seeds 1 and 2 of the five classification tasks (seed 0 ran in
#   compare_more.sh). BFRS takes no seed, so compare.py hands it the train set shuffled by the seed
#   (seed 0: unshuffled, as before); this gives the "higher than every DSPy optimizer on average"
#   comparison three seeds for BFRS too.
# Same output directory, LM cache and --resume as the earlier passes: finished rows are skipped, so the
# same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
run gsm8k 2 "mipro_light ours@small-model" $(sizes gsm8k)
for task in bbh_navigate bbh_sports sst2 trec ag_news; do run "$task" "1 2" bfrs $(sizes "$task"); done
