#!/usr/bin/env bash
# The comparison table of experiments/results/compare/ (issue 5): SST-2 and TREC, seeds 0-2, at MIPROv2
# light's task-LM call budget. Seeds run in the outer loop so a cut-short run still covers both tasks;
# rows are resumable (--resume skips finished (task, seed, method) rows).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/compare}
METHODS=${METHODS:-"seed random mipro_light ours@small-model ours"}
for seed in ${SEEDS:-0 1 2}; do
  for task in ${TASKS:-sst2 trec}; do
    .venv/bin/python experiments/compare.py --tasks "$task" --seeds "$seed" --methods $METHODS --out "$OUT" --resume
  done
done
