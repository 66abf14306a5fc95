#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the seventeenth pass (issue 5): ours@small-model-crossfit-both
# again on all six tasks, seeds 0-2, after the engine change to the winner's tie-break
# (`search._rank`): among complete trials tied on the cross-fitted objective, the one with the higher
# mean on the validation split itself wins before the shorter prompt. The search is unchanged (neither
# pruner nor the sampler reads that ranking), so only a run whose best objective is tied between trials
# with different validation-split means picks another winner; the harness trajectory ranks the same way.
# The preset's sixteenth-pass rows of all six tasks are archived once in rows-crossfit-both-pass16.jsonl.
# PAIRS="task:seed ..." runs some of them (a pair's old row leaves rows.jsonl only when it runs again, so a
# cut-short pass keeps the others' rows); the same command continues a cut-short run (--resume).
# As it ran (a new machine, cold LM cache): gsm8k:1 first, then the classification pairs, then gsm8k:0 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
OURS=ours@small-model-crossfit-both
ALL="sst2 trec ag_news bbh_navigate bbh_sports gsm8k"
DEFAULT=$(for t in $ALL; do for s in 0 1 2; do printf '%s:%s ' "$t" "$s"; done; done)
PAIRS=${PAIRS:-$DEFAULT}
rerun_rows rows-crossfit-both-pass16.jsonl "$OURS" "$ALL" $PAIRS
for pair in $PAIRS; do
  task=${pair%%:*} seed=${pair##*:}
  run "$task" "$seed" "$OURS" $(sizes "$task") --ours $OURS
done
