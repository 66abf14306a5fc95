"""A program of two steps on the real model (``tasks/gsm8k_program``, run on the embedded base model): the search
runs every step's calls, the run directory shows both steps, ``report`` and ``bench`` read it, and the ``yaml`` export
of the program passes the parity check against llama.cpp's server (the plain client runs both steps)."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, run_cli

pytestmark = pytest.mark.integration


def program_data() -> dict:
    """``tasks/gsm8k_program/task.yaml`` with its data files made absolute."""
    data = yaml.safe_load((ROOT / "tasks/gsm8k_program/task.yaml").read_text())
    data["dataset"]["files"] = {k: str((ROOT / "tasks/gsm8k_program" / v).resolve())
                                for k, v in data["dataset"]["files"].items()}
    return data


def optimize_small(tmp_path, data: dict, train: int, validation: int, test: int, **optimizer):
    """``optimize`` (the CLI) on ``data`` with small splits; returns the run directory and its summary."""
    data["splits"]["train"]["limit"], data["splits"]["validation"]["limit"] = train, validation
    data["splits"]["test"]["limit"] = test
    data["optimizer"].update(trials=2, demo_sets=2, instructions=1, crossfit=0, **optimizer)
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    r = run_cli(str(task_file), "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--quiet", timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    return run, json.loads((run / "summary.json").read_text())


def test_the_two_step_program_runs_reports_and_exports_with_parity(tmp_path):
    data = program_data()
    # the task ships on local-instruct; the base model runs the same steps faster, within a test's budget
    data["lm"] = "local"
    data["steps"][0]["max_tokens"] = 96
    run, s = optimize_small(tmp_path, data, 10, 4, 4, max_demos=2, bootstrap_examples=4)
    assert s["program"] == "steps" and [st["name"] for st in s["best"]["steps"]] == ["solve", "extract"]
    assert s["phases"]["bootstrap"]["calls"] == 8  # 4 training problems, two calls each
    preds = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    # every test answer carries both fields the steps wrote; the solutions run over several lines
    assert all(set(p["best"]["prediction"]) == {"solution", "answer"} for p in preds)
    assert any("\n" in p["best"]["prediction"]["solution"] for p in preds), preds
    assert "## step solve" in (run / "prompt.txt").read_text()
    r = run_cli("report", str(run))
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    html = (run / "report.html").read_text()
    assert "solve: Solve the problem step by step." in html and "extract #0" in html
    # bench: the winner against the seed program on the same test problems, from the run's cache
    r = run_cli("bench", str(tmp_path / "task.yaml"), "--candidates", str(run), f"{run}#baseline", "--cache-dir",
                str(tmp_path / "c"), "--timing-calls", "1", "--out", str(tmp_path / "bench"), "--format", "json",
                "--quiet", timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    doc = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [len(c["steps"]) for c in doc["config"]["candidates"]] == [2, 2]
    best = doc["candidates"][[c["name"] for c in doc["candidates"]].index(doc["reference"])]
    assert best["mean"] == s["best"]["test"]  # the cached answers of the run, scored again
    r = run_cli("export", str(run), "--format", "yaml", "--out", str(tmp_path / "p.yaml"), "--sample", "4",
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert [st["name"] for st in art["steps"]] == ["solve", "extract"]
    parity = art["parity"]
    assert parity["passed"] is True and parity["prompts_equal"] == 4, parity
    assert parity["endpoint_prompt_tokens_equal"] == 4, parity  # every step's prompt, token for token


def test_one_call_writing_two_fields_on_the_instruct_model_exports_with_parity(tmp_path):
    """``output:`` as a list on local-instruct (the chat adapter): one call writes the worked solution and
    the number; the yaml export holds the call's messages, and the plain client's parity check sends them
    to llama.cpp's server with the model's own chat template."""
    data = program_data()
    solve = data.pop("steps")[0]["output"]
    data.update(output=[solve, data["output"]], instruction="Solve the problem step by step, then give the number.",
                lm="local-instruct", max_tokens=128)
    run, s = optimize_small(tmp_path, data, 8, 3, 4, max_demos=1, bootstrap_examples=2)
    assert s["adapter"] == "chat" and [st["name"] for st in s["best"]["steps"]] == ["call"]
    preds = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    assert all(set(p["best"]["prediction"]) == {"solution", "answer"} for p in preds)
    assert sum(1 for p in preds if p["best"]["prediction"]["answer"]) >= 3, preds  # the chat framing is read
    r = run_cli("export", str(run), "--format", "yaml", "--out", str(tmp_path / "p.yaml"), "--sample", "4",
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert art["api"] == "chat" and [f["name"] for f in art["steps"][0]["outputs"]] == ["solution", "answer"]
    assert art["parity"]["passed"] is True and art["parity"]["prompts_equal"] == 4, art["parity"]
