#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the fourteenth pass (issue 5): ours@small-model-crossfit-both
# (configs/optimizer/small-model-crossfit-both.yaml) on GSM8K, seeds 0-2, so that the preset the verdict
# sets against DSPy's optimizers has a row on every task. Same output directory and --resume as the
# earlier passes; finished rows are skipped, so the same command continues a cut-short run. Seed 0 ran
# in this pass (2083 s of search on 2 cores, part of it beside a test run); seeds 1 and 2 were stopped for
# time then and ran, with this same command, in the sixteenth pass (a new machine, cold LM cache).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for seed in 0 1 2; do
  run gsm8k "$seed" ours@small-model-crossfit-both $(sizes gsm8k) --ours ours@small-model-crossfit-both
done
