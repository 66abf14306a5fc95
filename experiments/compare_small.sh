#!/usr/bin/env bash
# The comparison table of experiments/results/compare/ (issue 5), as it was run: SST-2 and TREC at
# MIPROv2 light's task-LM call budget of the same (task, seed); seed 0 with every method below, seeds 1
# and 2 with the seed prompt, random demos, MIPROv2 light and ours@small-model (the 2-core machine's time allowed no
# more). Rows are resumable: --resume skips finished (task, seed, method) rows, so the same command
# continues a cut-short run; LM responses are cached in $OUT/lm-cache.sqlite.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/compare}
FULL=${FULL:-"seed random mipro_light ours@small-model ours"}
LIGHT=${LIGHT:-"seed random mipro_light ours@small-model"}
TASKS=${TASKS:-"sst2 trec"}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds "$2" --methods $3 --out "$OUT" --resume; }
for task in $TASKS; do run "$task" 0 "$FULL"; done
for seed in 1 2; do
  for task in $TASKS; do run "$task" "$seed" "$LIGHT"; done
done
