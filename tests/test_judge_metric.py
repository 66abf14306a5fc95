"""The ``judge`` metric: an LM says whether an answer meets a rubric. Its calls go through the run's response
cache and budget, are counted apart from the task's (``summary.judge``) and planned by the dry run; a judge
profile that does not exist is one line naming ``metric.lm``. A scripted judge here; the instruct model as
judge in ``test_judge_metric_real_model``."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import run_cli
from fakes import JudgeBackend, ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize, plan
from optimizer.lm.cache import ResponseCache
from optimizer.metrics import normalize
from optimizer.task import task_from_dict

CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Chile", "Santiago"),
            ("Egypt", "Cairo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Ghana", "Accra"), ("Nepal", "Kathmandu"),
            ("Cuba", "Havana"), ("Iran", "Tehran"), ("Mali", "Bamako"), ("Laos", "Vientiane"), ("Fiji", "Suva"),
            ("Oman", "Muscat"), ("Peru2", "Lima2"), ("Chad", "N'Djamena"), ("Togo", "Lome"), ("Iraq", "Baghdad")]


def judge_task(tmp_path, lm="local", **optimizer):
    rows = [{"country": c, "capital": k} for c, k in CAPITALS]
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"task": "capitals", "dataset": {"format": "jsonl", "files": {"train": "caps.jsonl"}},
            "splits": {"train": {"from": "train", "limit": 8}, "validation": {"from": "train", "limit": 6},
                       "test": {"from": "train", "limit": 6}},
            "inputs": [{"name": "country", "prefix": "Review"}], "output": {"name": "capital", "prefix": "Sentiment"},
            "instruction": "Name the capital city.", "max_tokens": 8,
            "metric": {"name": "judge", "lm": lm, "rubric": "The answer names the same city as the reference."},
            "optimizer": {"trials": 3, "max_demos": 2, "demo_sets": 2, "instructions": 1, "selectors": ["random"],
                          "scoring": ["generate"], "start": "seed", "crossfit": 0, "objective": "mean", **optimizer}}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(data))
    return task_from_dict(data, base_dir=tmp_path)


def task_lm(task, cache=None):
    s = make_splits(task)
    answers = {e.inputs["country"]: e.output for e in s.train + s.validation + s.test}
    return ScriptedBackend(answers, wrong="Atlantis", cache=cache, labels=())


def test_a_run_judges_through_its_cache_and_budget_and_counts_the_judge_apart(tmp_path):
    task = judge_task(tmp_path)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    lm, judge = task_lm(task, cache), JudgeBackend(cache)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=lm, judge_backend=judge, seed=0))
    s = res.summary
    assert s["metric"] == "judge:local"
    assert s["judge"]["lm"] == "local" and s["judge"]["calls"] == judge.usage.calls > 0
    assert s["lm_calls"] == lm.usage.calls  # the task's calls, without the judge's
    # every scored answer was judged once (a repeated answer to the same example is a cache hit)
    asked = {(r.messages[-1][1]) for r in judge.requests}
    assert judge.usage.paid_calls == len(asked) == len(judge.requests)
    spend = [json.loads(line) for line in (res.run_dir / "spend.jsonl").read_text().splitlines()]
    assert len(spend) == lm.usage.paid_calls + judge.usage.paid_calls  # the budget counts the judge's calls
    preds = [json.loads(line) for line in (res.run_dir / "test_predictions.jsonl").read_text().splitlines()]
    for p in preds:  # the scripted judge says yes exactly when the city is the reference's
        assert p["best"]["score"] == float(normalize(p["best"]["prediction"]["capital"]) == normalize(p["expected"]))
    # the same command again: the judgments come from the cache
    lm2, judge2 = task_lm(task, cache), JudgeBackend(cache)
    again = optimize(task, RunOptions(out=tmp_path / "run2", backend=lm2, judge_backend=judge2, seed=0)).summary
    assert judge2.usage.paid_calls == 0 and again["judge"]["cache_hits"] == again["judge"]["calls"] > 0
    assert again["best"]["test"] == s["best"]["test"]


def test_bench_and_report_show_the_judges_calls_apart(tmp_path):
    from optimizer.bench import BenchOptions, run_bench, to_markdown
    from optimizer.report import build_report

    task = judge_task(tmp_path)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    lm, judge = task_lm(task, cache), JudgeBackend(cache)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=lm, judge_backend=judge, seed=0))
    html = build_report(res.run_dir).read_text()
    assert f"judge local: {res.summary['judge']['calls']} calls" in html
    lm2, judge2 = task_lm(task), JudgeBackend()
    doc = run_bench(task, [str(res.run_dir), f"{res.run_dir}#baseline"],
                    BenchOptions(out=tmp_path / "bench", backend=lm2, judge_backend=judge2)).doc
    answers = len(doc["candidates"]) * doc["examples"]
    assert doc["judge"]["lm"] == "local" and doc["judge"]["calls"] == judge2.usage.calls
    assert 0 < judge2.usage.calls <= answers and lm2.usage.calls >= answers  # the task's calls count apart
    assert f"judge local: {judge2.usage.calls} calls" in to_markdown(doc)


def test_a_call_cap_stops_on_the_judges_calls_too(tmp_path):
    task = judge_task(tmp_path)
    lm, judge = task_lm(task), JudgeBackend()
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=lm, judge_backend=judge, seed=0, max_calls=20))
    assert res.summary["stopped"] and lm.usage.paid_calls + judge.usage.paid_calls <= 20


def test_the_dry_run_plans_the_judges_calls(tmp_path):
    task = judge_task(tmp_path)
    p = plan(task)
    phases = p["phases"]
    scored = sum(phases[k]["calls"] for k in ("bootstrap", "search", "test", "confirmation"))
    assert phases["judge"]["calls"] == scored > 0
    assert p["total"]["calls"] == sum(r["calls"] for r in phases.values())


def test_a_judge_profile_that_does_not_exist_is_one_line_and_exit_2(tmp_path):
    judge_task(tmp_path, lm="no-such-judge")
    for args in (("validate", str(tmp_path / "task.yaml")), (str(tmp_path / "task.yaml"), "--dry-run")):
        r = run_cli(*args)
        out = (r.stderr + r.stdout).strip()
        assert r.returncode == 2 and "Traceback" not in out, out
        assert len(out.splitlines()) == 1 and "metric.lm" in out and "no-such-judge" in out, out


def test_judge_needs_a_profile_and_a_rubric(tmp_path):
    from optimizer.errors import ConfigError

    task = judge_task(tmp_path)
    data = yaml.safe_load((tmp_path / "task.yaml").read_text())
    del data["metric"]["rubric"]
    with pytest.raises(ConfigError, match=r"metric: .*needs `lm: PROFILE`.*`rubric:`"):
        task_from_dict(data, base_dir=tmp_path)
    assert task.metric.lm == "local"
