"""`optimize` end to end through the CLI on the real embedded model (small splits, few trials)."""

import json

import dspy
import pytest

from conftest import ROOT, run_cli
from optimizer.program import build_program
from optimizer.task import load_task

pytestmark = pytest.mark.integration  # the embedded model through the CLI


def small_sst2(tmp_path):
    from conftest_runs import small_sst2_task

    return small_sst2_task(tmp_path / "task.yaml")


def test_optimize_beats_seed_on_test_and_rerun_is_identical(tmp_path):
    task_file = small_sst2(tmp_path)
    cache = tmp_path / "cache"
    r = run_cli(str(task_file), "--trials", "6", "--seed", "0", "--out", str(tmp_path / "a"), "--cache-dir",
                str(cache))
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["best"]["test"] > a["baseline"]["test"], a
    assert a["best"]["n_demos"] > 0
    assert a["lm_calls"] > 0 and a["cache_hits"] < a["lm_calls"] and a["prompt_tokens"] > 0
    assert a["trials"]["complete"] + a["trials"]["pruned"] == 6
    assert "winner" in r.stderr and "test gain" in r.stderr  # the final table
    # the same command again, warm cache: same scores, nothing paid
    r2 = run_cli(str(task_file), "--trials", "6", "--seed", "0", "--out", str(tmp_path / "b"), "--cache-dir",
                 str(cache))
    assert r2.returncode == 0, r2.stderr[-3000:]
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    for side in ("baseline", "best"):
        for key in ("val", "test", "test_ci", "instruction", "demo_ids"):
            assert a[side][key] == b[side][key], (side, key)
    assert b["paid_calls"] == 0 and b["cache_hits"] == b["lm_calls"]
    # best_program.json is a DSPy program that runs on the embedded model and answers like the engine did
    from optimizer.adapters import CompletionAdapter
    from optimizer.lm import create_backend, load_profile
    from optimizer.lm.dspy_engine import dspy_lm

    task = load_task(task_file)
    program = build_program(task)
    program.load(str(tmp_path / "a" / "best_program.json"))
    preds = [json.loads(line) for line in (tmp_path / "a" / "test_predictions.jsonl").read_text().splitlines()]
    backend = create_backend(load_profile("local"), cache=False)
    with dspy.context(lm=dspy_lm(backend, max_tokens=task.max_tokens), adapter=CompletionAdapter()):
        for p in preds[:3]:
            out = program(**p["inputs"])
            assert out.sentiment == p["best"]["prediction"]["sentiment"]
    assert backend.usage.calls == 3  # every DSPy call went through our backend
    backend.close()
