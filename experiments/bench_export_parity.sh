#!/usr/bin/env bash
# Export the winners of the runs made by experiments/bench_sst2_trec.sh in every format, with the parity
# check against a llama.cpp server that `optimize export` starts on loopback (default sample: 50 test
# examples), then verify the openai-chat export against a stock server that applies the model's own
# chat template (what a production user who ignores `chat_template` would get; expected to FAIL).
# Appends the parity lines to experiments/results/export_parity.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-experiments/runs}
TASKS=${TASKS:-"sst2 trec"}
SAMPLE=${SAMPLE:-50}
res=experiments/results/export_parity.md
mkdir -p experiments/results
{
  echo "## export parity ($(date -u +%Y-%m-%d), sample $SAMPLE test examples, llama.cpp server on loopback)"
  echo
} >> "$res"
for task in $TASKS; do
  run="$OUT/$task-small-run"
  mkdir -p "$OUT/exports/$task"
  for fmt in openai-chat completion yaml dspy; do
    ext=json; [[ $fmt == yaml ]] && ext=yaml
    line=$("$PY" -m optimizer.cli export "$run" --format "$fmt" --out "$OUT/exports/$task/winner.$fmt.$ext" \
           --sample "$SAMPLE" | head -1)
    echo "- $task: $line" | tee -a "$res"
  done
  # the same openai-chat export sent to a server that applies the model's own chat template
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  model=$("$PY" -c 'from optimizer.lm._local import embedded_model_path; print(embedded_model_path())')
  "$PY" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" --n_ctx 4096 \
      --model_alias gemma3-270m-q4_k_m --n_threads 2 > /dev/null 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null && break; sleep 1; done
  line=$("$PY" -m optimizer.cli export "$run" --verify "$OUT/exports/$task/winner.openai-chat.json" \
         --endpoint "http://127.0.0.1:$port/v1" --sample "$SAMPLE" 2>&1 | head -1 || true)
  echo "- $task, openai-chat on a stock server (model's own chat template): $line" | tee -a "$res"
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  trap - EXIT
done
echo >> "$res"
