#!/usr/bin/env bash
# Rows of experiments/results/compare/ beyond compare_small.sh (issue 5), as far as the 2-core machine's
# time allowed: DSPy BootstrapFewShotWithRandomSearch on SST-2 and TREC (seed 0), and the two BIG-Bench
# Hard tasks and AG News at seed 0 with the seed prompt, random demos, MIPROv2 light and ours@small-model.
# Same output directory, LM cache and --resume as compare_small.sh: finished rows are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/compare}
EXTRA=${EXTRA:-"seed random mipro_light ours@small-model"}
TASKS=${TASKS:-"bbh_navigate bbh_sports ag_news"}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds "$2" --methods $3 --out "$OUT" --resume "${@:4}"; }
sizes() {  # the BBH tasks keep their own splits (250 examples: 30% train, 60 validation, 100 test)
  case "$1" in bbh_*) echo --val 60 --test 100 ;; *) echo ;; esac
}
for task in sst2 trec; do run "$task" 0 bfrs; done
for task in $TASKS; do run "$task" 0 "$EXTRA" $(sizes "$task"); done
