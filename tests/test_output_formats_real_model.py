"""JSON answers on the real models (``tasks/trec_json``): a search on the embedded base model whose ``yaml``
export passes the parity check against llama.cpp's server (the plain client reads the JSON as the optimizer
did), the instruct model answering through the chat adapter with JSON that meets the schema, and
``tasks/gsm8k_extract`` (two input fields, one JSON object) optimized, reported, benched and exported on the
instruct model."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import MECHANISM_SETTINGS, ROOT, run_cli

pytestmark = pytest.mark.integration


def small_task_file(tmp_path, name, train=16, validation=6, test=8, **optimizer):
    """``tasks/NAME/task.yaml`` with small splits under ``MECHANISM_SETTINGS``, written to ``tmp_path``."""
    data = yaml.safe_load((ROOT / "tasks" / name / "task.yaml").read_text())
    data["splits"]["train"]["limit"], data["splits"]["validation"]["limit"] = train, validation
    data["splits"]["test"]["limit"] = test
    data["dataset"]["files"] = {k: str(ROOT / "tasks" / name / v) for k, v in data["dataset"]["files"].items()}
    data["optimizer"].update(**MECHANISM_SETTINGS, **optimizer)
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trec_json_file(tmp_path, **kw):
    return small_task_file(tmp_path, "trec_json", **kw)


def test_json_answers_on_the_base_model_and_their_export_pass_parity(tmp_path):
    task_file = trec_json_file(tmp_path, trials=2, max_demos=4, demo_sets=2, instructions=1)
    run = tmp_path / "run"
    r = run_cli(str(task_file), "--lm", "local", "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--quiet",
                timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["metric"] == "json_fields>exact_match" and s["best"]["n_demos"] > 0
    # with demos the base model writes JSON objects of the schema's shape
    assert s["best"]["parse_failure_rate"] <= 0.5, s["best"]
    preds = [json.loads(line)["best"] for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    objects = [json.loads(p["prediction"]["answer"]) for p in preds if p["prediction"]["answer"].startswith("{")]
    assert len(objects) >= len(preds) // 2 and all(isinstance(o, dict) for o in objects)
    r = run_cli("export", str(run), "--format", "yaml", "--out", str(tmp_path / "p.yaml"), "--sample", "8",
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert art["output_parsing"]["rule"] == "json-object" and art["parity"]["passed"] is True, art.get("parity")


def test_the_instruct_model_answers_json_that_meets_the_schema_through_the_chat_adapter(tmp_path):
    from optimizer.answers import json_problem
    from optimizer.data import make_splits
    from optimizer.evaluate import Evaluator
    from optimizer.lm._local import LocalBackend
    from optimizer.lm.profiles import load_profile
    from optimizer.metrics import build_metric
    from optimizer.program import Candidate
    from optimizer.task import load_task

    task = load_task(trec_json_file(tmp_path))
    examples = make_splits(task).test[:6]
    backend = LocalBackend(load_profile("local-instruct"))
    try:
        ev = Evaluator(task, backend, build_metric(task), adapter="chat", max_tokens=task.max_tokens)
        r = ev.evaluate(Candidate(task.instruction), examples)  # zero-shot: the instruction and the field's desc
    finally:
        backend.close()
    texts = [o.text for o in r.outcomes]
    parsed = [o for o in r.outcomes if o.parsed]
    assert len(parsed) >= 5, texts
    assert all(json_problem(o.prediction["answer"], task.output.json_schema) is None for o in parsed)
    assert sum(o.score for o in r.outcomes) > 0, texts  # some keys right


def test_two_input_fields_and_a_json_object_on_the_instruct_model(tmp_path):
    """``tasks/gsm8k_extract`` end to end with the README's commands: optimize on local-instruct (the chat
    adapter), report, bench the winner against the seed prompt, and the openai-chat export's parity check."""
    task_file = small_task_file(tmp_path, "gsm8k_extract", train=8, validation=4, test=6, trials=2, max_demos=2,
                                demo_sets=2, instructions=1)
    run, cache = tmp_path / "run", str(tmp_path / "c")
    r = run_cli(str(task_file), "--out", str(run), "--cache-dir", cache, "--quiet", timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["adapter"] == "chat" and s["metric"] == "json_fields>numeric"
    assert s["best"]["parse_failure_rate"] <= 1 / 6, s["best"]  # JSON objects of the schema's shape
    prompt = (run / "prompt.txt").read_text()
    assert "[[ ## question ## ]]" in prompt and "[[ ## solution ## ]]" in prompt  # both inputs, chat framing
    preds = [json.loads(line)["best"] for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    objects = [json.loads(p["prediction"]["answer"]) for p in preds if p["prediction"]["answer"]]
    assert objects and all(set(o) == {"result", "steps"} for o in objects), preds
    assert s["best"]["test"] > 0, preds  # some result or count right
    r = run_cli("report", str(run), timeout=300)
    assert r.returncode == 0 and (run / "report.html").exists(), r.stderr[-1500:]
    r = run_cli("bench", str(task_file), "--candidates", f"seed={run}#baseline", f"best={run}",
                "--out", str(tmp_path / "bench"), "--cache-dir", cache, "--timing-calls", "1", timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    r = run_cli("export", str(run), "--format", "openai-chat", "--out", str(tmp_path / "chat.json"), "--sample", "4",
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = json.loads((tmp_path / "chat.json").read_text())
    assert art["inputs"] == ["question", "solution"] and art["parity"]["passed"] is True, art.get("parity")
