#!/usr/bin/env bash
# Rows of experiments/results/compare/ added in the seventh pass (issue 5):
# - ours@small-model again on the five classification tasks, seeds 0-2, now with batch calibration as a
#   third joint label readout (scoring: [auto] resolves to likelihood, calibrated, batch): a trial that
#   completes also reads its prompt with offsets estimated on the validation inputs it has just scored
#   (no LM call) and keeps the best readout. The sixth pass's rows were relabelled ours@small-model-cc
#   (configs/optimizer/small-model-cc.yaml: the same preset with likelihood and calibrated only).
#   GSM8K has no label readouts, so its rows stand.
# Same output directory and --resume as the earlier passes; finished rows are skipped, so the same
# command continues a cut-short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/compare_lib.sh
.venv/bin/python - "$OUT/rows.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
rows = [json.loads(x) for x in open(path) if x.strip()]
if not any(r["method"] == "ours@small-model-cc" for r in rows):  # relabel once
    for r in rows:
        if r["method"] == "ours@small-model" and r["task"] != "gsm8k":
            r["method"] = "ours@small-model-cc"
    open(path, "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
ours_classification
