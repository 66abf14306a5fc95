# Shared by the compare_*.sh passes (source it after `cd` to the repository root): `run TASKS SEEDS
# METHODS [ARGS...]` appends finished rows to $OUT with --resume, `sizes TASK` prints its split sizes.
OUT=${OUT:-experiments/results/compare}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds $2 --methods $3 --out "$OUT" --resume "${@:4}"; }
sizes() {
  case "$1" in bbh_*) echo --val 60 --test 100 ;; gsm8k) echo --train 100 --val 40 --test 100 ;; *) echo ;; esac
}
# `ours_classification`: ours@small-model on the five classification tasks, seeds 0-2 (passes five and six)
ours_classification() {
  for seed in 0 1 2; do
    for task in sst2 trec ag_news bbh_navigate bbh_sports; do run "$task" "$seed" ours@small-model $(sizes "$task"); done
  done
}
