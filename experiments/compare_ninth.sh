#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the ninth pass (issue 5):
# - ours@small-model-minval on the two BBH tasks, seeds 0-2: the small-model preset with the 60-example
#   validation split topped up to 97 from the end of the train split (optimizer.min_validation: 100,
#   configs/optimizer/small-model-minval.yaml). The other classification tasks have 100 validation
#   examples, where the preset is small-model; GSM8K (40) would change too and was not run.
# - MIPROv2 medium and GEPA, seeds 1 and 2, on the five classification tasks (seed 0 ran in the third and
#   sixth passes), so that every DSPy optimizer in the table has three seeds there.
# Same output directory and --resume as the earlier passes; finished rows are skipped, so the same
# command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
for seed in 0 1 2; do
  for task in bbh_navigate bbh_sports; do run "$task" "$seed" ours@small-model-minval $(sizes "$task"); done
done
for seed in 1 2; do
  for task in sst2 trec ag_news bbh_navigate bbh_sports; do run "$task" "$seed" mipro_medium $(sizes "$task"); done
done
for seed in 1 2; do
  for task in sst2 trec ag_news bbh_navigate bbh_sports; do
    timeout 900 .venv/bin/python experiments/compare.py --tasks "$task" --seeds "$seed" --methods gepa --out "$OUT" \
      --resume $(sizes "$task") || echo "gepa on $task seed $seed: stopped after 900 s (no row)"
  done
done
