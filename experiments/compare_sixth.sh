#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the sixth pass (issue 5):
# - ours@small-model again on the five classification tasks, seeds 0-2, with joint readouts (the
#   default since this pass): each trial scores its prompt under both label readouts (likelihood and
#   calibrated) off the same LM responses and keeps the better one, instead of searching the readout as
#   a trial parameter. The fifth pass's rows were relabelled ours@small-model-searched (the same preset
#   with readouts: searched, configs/optimizer/small-model-searched.yaml). GSM8K has no label readouts
#   (generated answers), so its rows stand.
# Same output directory and --resume as the earlier passes (the LM cache is not committed: on a new
# machine it starts cold). Finished rows are skipped, so the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
ours_classification
# MIPROv2 medium (above light's budget; for reference) on the other classification tasks, seed 0
for task in trec ag_news bbh_navigate bbh_sports; do run "$task" 0 mipro_medium $(sizes "$task"); done
