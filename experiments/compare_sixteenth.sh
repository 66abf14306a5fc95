#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the sixteenth pass (issue 5): ours@small-model-crossfit-both
# again on the five classification tasks, seeds 0-2, after the engine change that runs the start trials
# (the first fixed demo set, the kNN prompt, the seed prompt) before the bootstrap teacher's 48 calls
# (`SearchSpace.early_slots`, `selectors.fill_pool`): the first incumbent is scored 48 calls sooner. The
# winners are the same on SST-2, AG News and both BBH tasks; on TREC, where the teacher makes no set,
# the pool's layout changed (its indices hold random sets) and seed 1 picked another winner. The preset's
# earlier rows of these tasks move to rows-crossfit-both-pass15.jsonl (their trajectories place the
# teacher's calls first, as they ran then). Same output directory and --resume as the earlier passes; the
# same command continues a cut-short run. As it ran (a new machine, cold LM cache): TASKS=bbh_navigate,
# then bbh_sports, then compare_fourteenth.sh (GSM8K seeds 1 and 2 of the preset), then TASKS=sst2, trec,
# ag_news, one task at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
OURS=ours@small-model-crossfit-both
ALL="bbh_navigate bbh_sports sst2 trec ag_news"
# TASKS=... runs some of them (one task at a time keeps the others' old rows in the table until theirs run)
TASKS=${TASKS:-$ALL}
# rows-crossfit-both-pass15.jsonl keeps the preset's fifteenth-pass rows of all five tasks (written once);
# a row of rows.jsonl found there is one of them, and leaves rows.jsonl, if its task is in TASKS, so that
# its pair runs again
rerun_rows rows-crossfit-both-pass15.jsonl "$OURS" "$ALL" $TASKS
for task in $TASKS; do
  for seed in 0 1 2; do run "$task" "$seed" "$OURS" $(sizes "$task") --ours $OURS; done
done
