"""The search logic end to end with a scripted LM (fast); the real model is in test_optimize_end_to_end.py."""

import json

import dspy
import optuna

from conftest import sst2_task
from fakes import ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.lm.cache import ResponseCache
from optimizer.program import build_program


def scripted_for(task, cache=None):
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    return ScriptedBackend(answers, cache=cache)


def test_search_finds_more_demos_and_writes_run_dir(tmp_path):
    task = sst2_task(trials=10, bootstrap_examples=16)
    backend = scripted_for(task)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend, seed=1))
    s = res.summary
    # the scripted model answers better with more demos: the winner must have demos and beat the seed
    assert s["best"]["n_demos"] > 0
    assert s["best"]["val"] > s["baseline"]["val"]
    assert s["best"]["test"] > s["baseline"]["test"]
    for key in ("task", "seed", "baseline", "best", "lm_calls", "cache_hits", "prompt_tokens", "completion_tokens",
                "wall_seconds"):
        assert key in s
    for side in ("baseline", "best"):
        assert {"val", "test", "test_ci"} <= set(s[side])
        lo, hi = s[side]["test_ci"]
        assert lo <= s[side]["test"] <= hi
    assert s["lm_calls"] == backend.usage.calls
    run = res.run_dir
    for f in ("task.resolved.yaml", "study.db", "trials.jsonl", "best_program.json", "summary.json", "prompt.txt",
              "splits.json", "candidates.json", "test_predictions.jsonl"):
        assert (run / f).exists(), f
    trials = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 10
    assert trials[0]["params"].get("n_demos") == 0 and trials[0]["params"]["instruction"] == 0  # seed first
    assert all({"params", "score", "lm_calls", "seconds"} <= set(t) for t in trials)
    study = optuna.load_study(study_name="sst2-seed1", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 10
    # the saved program is a real DSPy program with the winner's demos and instruction
    program = build_program(task)
    program.load(str(run / "best_program.json"))
    assert len(program.demos) == s["best"]["n_demos"]
    assert program.signature.instructions == s["best"]["instruction"]
    # the rendered prompt holds the demos and a placeholder for the input
    prompt = (run / "prompt.txt").read_text()
    assert "{{sentence}}" in prompt and prompt.count("Sentiment:") == s["best"]["n_demos"] + 1


def test_pruning_stops_bad_trials_early(tmp_path):
    task = sst2_task(trials=12, validation=40, min_examples=8, prune_p=0.2)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    trials = [json.loads(line) for line in (res.run_dir / "trials.jsonl").read_text().splitlines()]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, "expected some trials to be raced out"
    assert all(t["examples"] < 40 for t in pruned)
    assert all(t["examples"] == 40 for t in trials if t["state"] == "complete")
    assert res.summary["trials"]["pruned"] == len(pruned)


def test_same_seed_same_result_and_cache_serves_rerun(tmp_path):
    task = sst2_task(trials=8)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    a = optimize(task, RunOptions(out=tmp_path / "a", backend=scripted_for(task, cache), seed=5)).summary
    b_backend = scripted_for(task, cache)
    b = optimize(task, RunOptions(out=tmp_path / "b", backend=b_backend, seed=5)).summary
    for side in ("baseline", "best"):
        assert a[side]["val"] == b[side]["val"] and a[side]["test"] == b[side]["test"]
        assert a[side]["test_ci"] == b[side]["test_ci"]
        assert a[side]["instruction"] == b[side]["instruction"] and a[side]["demo_ids"] == b[side]["demo_ids"]
    assert b["cache_hits"] == b["lm_calls"] and b_backend.prompts == []  # nothing paid twice


def test_metric_that_raises_stops_with_metric_error_and_keeps_trials(tmp_path):
    import pytest

    from optimizer.errors import MetricError

    (tmp_path / "m.py").write_text(
        "calls = 0\n"
        "def score(example, prediction):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if calls > 60:\n"
        "        raise RuntimeError('metric broke')\n"
        "    return example.sentiment == prediction.sentiment\n")
    task = sst2_task(trials=6, bootstrap_examples=0, selectors=["random"])
    task.metric.name = "custom"
    task.metric.function = str(tmp_path / "m.py") + ":score"
    with pytest.raises(MetricError, match="metric broke"):
        optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    lines = (tmp_path / "run" / "trials.jsonl").read_text().splitlines()
    assert len(lines) >= 1  # trials finished before the failure are kept
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
