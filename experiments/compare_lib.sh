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
# `rerun_rows ARCHIVE METHOD "TASKS" KEY...`: before a pass re-runs METHOD, archive its rows of TASKS
# once in $OUT/ARCHIVE, then drop from rows.jsonl the archived rows a KEY names ("task" or "task:seed"),
# so that --resume runs those again and a cut-short pass keeps the other rows
rerun_rows() {
  .venv/bin/python - "$OUT" "$@" <<'PY'
import json, sys
from pathlib import Path
out, name, method, every, keys = Path(sys.argv[1]), sys.argv[2], sys.argv[3], set(sys.argv[4].split()), set(sys.argv[5:])
rows, archive = out / "rows.jsonl", out / name
lines = rows.read_text().splitlines(keepends=True)
if not archive.exists():
    archive.write_text("".join(x for x in lines if x.strip() and (r := json.loads(x))["method"] == method
                               and r["task"] in every))
old = set(archive.read_text().splitlines(keepends=True))
named = lambda r: r["task"] in keys or f'{r["task"]}:{r["seed"]}' in keys  # noqa: E731
rows.write_text("".join(x for x in lines if x not in old or not named(json.loads(x))))
PY
}
