#!/usr/bin/env bash
# Bench three candidates on SST-2 and TREC with the embedded model (Gemma 3 270M base):
#   seed   - the task's seed instruction, no demos (RUN#baseline)
#   winner - the winner of a small real optimization run (train 40/60, validation 24/30, test 60, 6 trials)
#   weak   - a deliberately weak prompt (experiments/bench_weak_<task>.yaml: asks another question, demos
#            answer outside the label set)
# on the task's full test split (300 held-out examples; the run's 60 test examples are its first 60).
# Writes experiments/results/bench_<task>.md (the Markdown table) and, per task, a bench directory and
# an HTML report under experiments/runs/ (not in git). Reruns reuse the LM cache and resume benches.
#
#   bash experiments/bench_sst2_trec.sh            # both tasks
#   TASKS=trec LIMIT=100 bash experiments/bench_sst2_trec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-experiments/runs}
TASKS=${TASKS:-"sst2 trec"}
TRIALS=${TRIALS:-6}
LIMIT=${LIMIT:-}
mkdir -p "$OUT" experiments/results

for task in $TASKS; do
  small="$OUT/$task-small.yaml"
  "$PY" - "$task" "$small" <<'PY'
import sys
from pathlib import Path

import yaml

task, out = sys.argv[1], Path(sys.argv[2])
root = Path("tasks") / task
data = yaml.safe_load((root / "task.yaml").read_text())
small = {"sst2": (40, 24, 60), "trec": (60, 30, 60)}[task]
for split, n in zip(("train", "validation", "test"), small):
    data["splits"][split]["limit"] = n
data["optimizer"].update({"max_demos": 6, "demo_sets": 6, "instructions": 4, "bootstrap_examples": 12})
data["dataset"]["files"] = {k: str((root / v).resolve()) for k, v in data["dataset"]["files"].items()}
out.write_text(yaml.safe_dump(data, sort_keys=False))
PY
  run="$OUT/$task-small-run"
  if [[ "$(cat "$run/status.json" 2>/dev/null)" != *finished* ]]; then
    "$PY" -m optimizer.cli "$small" --trials "$TRIALS" --seed 0 --out "$run" --quiet
  fi
  "$PY" -m optimizer.cli report "$run" --out "$OUT/$task-small-run.html" >/dev/null
  limit=()
  [[ -n "$LIMIT" ]] && limit=(--limit "$LIMIT")
  "$PY" -m optimizer.cli bench "tasks/$task/task.yaml" \
      --candidates "seed=$run#baseline" "winner=$run" "weak=experiments/bench_weak_$task.yaml" \
      --out "$OUT/bench-$task" "${limit[@]}" --format markdown | tee "experiments/results/bench_$task.md"
done
