#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the third pass (issue 5): GSM8K (chain of thought, 128
# tokens; 100 train / 40 validation / 100 test: DSPy's MIPROv2 needs a validation set of at least its
# 35-example minibatch) with the seed prompt, random demos, MIPROv2 light and ours@small-model for seeds
# 0, 1, 2 and BFRS for seed 0; MIPROv2 medium on SST-2 seed 0. Same output directory, LM cache and
# --resume as compare_small.sh / compare_more.sh: the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/compare}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds "$2" --methods $3 --out "$OUT" --resume "${@:4}"; }
GSM="--train 100 --val 40 --test 100"
run gsm8k 0 "seed random mipro_light ours@small-model" $GSM
run sst2 0 "mipro_medium"
for seed in 1 2; do run gsm8k "$seed" "seed random mipro_light ours@small-model" $GSM; done
run gsm8k 0 "bfrs" $GSM
