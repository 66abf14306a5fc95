#!/usr/bin/env bash
# Rows of experiments/results/compare/ beyond compare_small.sh (issue 5), as far as the 2-core machine's
# time allowed: the two BIG-Bench Hard tasks and AG News with the seed prompt, random demos, MIPROv2 light
# and ours@small-model for seeds 0, 1, 2; DSPy BootstrapFewShotWithRandomSearch on all five tasks (it has
# no seed parameter, so seed 0 only); DSPy GEPA on SST-2 (seed 0). GSM8K was not run (chain of thought at
# 128 tokens per call: about half an hour per method and seed here). Same output directory, LM cache and
# --resume as compare_small.sh: finished rows are skipped, so the same command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/compare}
EXTRA=${EXTRA:-"seed random mipro_light ours@small-model"}
TASKS=${TASKS:-"bbh_navigate bbh_sports ag_news"}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds "$2" --methods $3 --out "$OUT" --resume "${@:4}"; }
sizes() {  # the BBH tasks keep their own splits (250 examples: 30% train, 60 validation, 100 test)
  case "$1" in bbh_*) echo --val 60 --test 100 ;; *) echo ;; esac
}
for seed in 0 1 2; do
  for task in $TASKS; do run "$task" "$seed" "$EXTRA" $(sizes "$task"); done
done
for task in sst2 trec $TASKS; do run "$task" 0 bfrs $(sizes "$task"); done
timeout 900 .venv/bin/python experiments/compare.py --tasks sst2 --seeds 0 --methods gepa --out "$OUT" --resume
