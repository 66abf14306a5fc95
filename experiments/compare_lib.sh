# Shared by the compare_*.sh passes (source it after `cd` to the repository root): `run TASKS SEEDS
# METHODS [ARGS...]` appends finished rows to $OUT with --resume, `sizes TASK` prints its split sizes.
OUT=${OUT:-experiments/results/compare}
run() { .venv/bin/python experiments/compare.py --tasks "$1" --seeds $2 --methods $3 --out "$OUT" --resume "${@:4}"; }
sizes() {
  case "$1" in bbh_*) echo --val 60 --test 100 ;; gsm8k) echo --train 100 --val 40 --test 100 ;; *) echo ;; esac
}
