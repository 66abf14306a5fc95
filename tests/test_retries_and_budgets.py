"""Concurrency, retries, budgets, failure accounting and resume logic (fast: scripted model or the canned
loopback server of tests/faultproxy.py; the real model and server are in test_server_faults.py and
test_interrupt_and_resume.py)."""

import json
import time

import optuna
import pytest

from conftest import sst2_task
from faultproxy import FaultProxy
from fakes import ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import RunOptions, make_evaluator, optimize
from optimizer.errors import ConfigError
from optimizer.lm import create_backend
from optimizer.lm.base import AdaptiveLimiter, LMCallFailed, LMRequest, parse_retry_after
from optimizer.lm.cache import ResponseCache
from optimizer.lm.profiles import LMProfile
from optimizer.program import Candidate
from optimizer import search as search_mod


def scripted_for(task, cache=None):
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    return ScriptedBackend(answers, cache=cache)


def canned_backend(url, *, concurrency=8, retries=3, timeout=10.0, cache=None):
    prof = LMProfile(name="canned", backend="openai", base_url=url, model="canned", max_retries=retries,
                     timeout=timeout)
    b = create_backend(prof, cache=cache if cache is not None else False)
    b.set_concurrency(concurrency)
    b.retry.base = 0.01
    return b


def spend_keys(run_dir):
    return [json.loads(line)["key"] for line in (run_dir / "spend.jsonl").read_text().splitlines()]


def same_result(a, b):
    for side in ("baseline", "best"):
        for key in ("val", "test", "test_ci", "instruction", "demo_ids"):
            assert a[side][key] == b[side][key], (side, key, a[side][key], b[side][key])


# ------------------------------------------------------------------------ retries, limiter

def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({}) is None and parse_retry_after({"retry-after": "soon"}) is None


def test_limiter_halves_on_congestion_and_grows_back():
    lim = AdaptiveLimiter(16, cooldown=0.0)
    for _ in range(3):
        lim.acquire()
        lim.release(congested=True)
    assert int(lim.limit) == 2
    for _ in range(200):
        lim.acquire()
        lim.release()
    assert int(lim.limit) == 16


def test_429_waits_retry_after_then_succeeds():
    with FaultProxy(None, script=["429", "429"], retry_after="0.6") as fp:
        b = canned_backend(fp.url)
        t0 = time.perf_counter()
        r = b.complete(LMRequest(prompt="Review: fine\nSentiment:", max_tokens=2))
        assert time.perf_counter() - t0 >= 1.2  # two waits of Retry-After, not the 0.01 s back-off
        assert r.text.strip() in ("positive", "negative")
        assert b.usage.retries == 2 and b.usage.calls == 1 and b.usage.failures == 0
        assert fp.stats["429"] == 2


def test_concurrency_is_bounded_and_results_come_in_order():
    task = sst2_task(validation=40)
    s = make_splits(task)
    with FaultProxy(None, latency=0.1) as fp:
        b = canned_backend(fp.url, concurrency=6)
        ev = make_evaluator(task, b.profile, b)
        res = ev.evaluate(Candidate(task.instruction, tuple(s.train[:2]), {}), s.validation)
        assert [o.example_id for o in res.outcomes] == [e.id for e in s.validation]
        assert 2 <= fp.max_in_flight <= 6
        seq = canned_backend(fp.url, concurrency=1)
        ev1 = make_evaluator(task, seq.profile, seq)
        res1 = ev1.evaluate(Candidate(task.instruction, tuple(s.train[:2]), {}), s.validation)
        assert res1.scores == res.scores
        ev.close()
        ev1.close()


# ------------------------------------------------------------------------ failures per trial

def test_failed_calls_are_counted_never_scored_zero(tmp_path):
    task = sst2_task(trials=4, validation=24, bootstrap_examples=0, selectors=["random"], prune=False)
    with FaultProxy(None, rates={"500": 0.04}, seed=3) as fp:
        b = canned_backend(fp.url, retries=0, concurrency=4)
        res = optimize(task, RunOptions(out=tmp_path / "run", backend=b, seed=0, max_failure_rate=0.25))
    recs = [json.loads(x) for x in (res.run_dir / "trials.jsonl").read_text().splitlines()]
    assert sum(r["failed_calls"] for r in recs) > 0
    for r in recs:
        if r["state"] == "complete":
            assert r["examples"] + r["failed_calls"] == 24  # failed examples are left out, not scored 0
    assert res.summary["failed_calls"] == sum(r["failed_calls"] for r in recs)


def test_trial_past_failure_threshold_is_marked_failed(tmp_path):
    task = sst2_task(trials=3, validation=24, bootstrap_examples=0, selectors=["random"])
    with FaultProxy(None) as fp:
        b = canned_backend(fp.url, retries=0, concurrency=4)
        fp.set(rates={"500": 1.0})  # the endpoint breaks after the preflight
        with pytest.raises(LMCallFailed, match="failed 3 times"):
            optimize(task, RunOptions(out=tmp_path / "run", backend=b, seed=0, max_failure_rate=0.1))
    study = optuna.load_study(study_name="sst2-seed0", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 3 and not [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs["failed_calls"] > 2 for t in failed)  # counted per trial
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert [r["state"] for r in recs] == ["failed"] * 3 and all(r["score"] is None for r in recs)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------ budgets

def test_max_calls_is_never_exceeded_with_calls_in_flight_and_resume_completes(tmp_path):
    task = sst2_task(trials=6, validation=24, test=24, bootstrap_examples=8)
    cache = ResponseCache(tmp_path / "c.sqlite")
    with FaultProxy(None, latency=0.02) as fp:
        b = canned_backend(fp.url, concurrency=8, cache=cache)
        res = optimize(task, RunOptions(out=tmp_path / "run", backend=b, seed=0, max_calls=50))
        assert res.stopped and "--max-calls 50" in res.stopped
        assert b.usage.paid_calls <= 50 and len(spend_keys(res.run_dir)) <= 50
        assert b.usage.paid_calls >= 50 - 8  # it stopped at the limit, not long before
        s = json.loads((res.run_dir / "summary.json").read_text())
        assert s["stopped"] and s["best"]["test"] is None and (res.run_dir / "prompt.txt").exists()
        assert json.loads((res.run_dir / "status.json").read_text())["status"] == "stopped"
        # the same command with a larger budget continues: the budget counts the earlier spend
        b2 = canned_backend(fp.url, concurrency=8, cache=cache)
        res2 = optimize(task, RunOptions(out=tmp_path / "run", backend=b2, seed=0, max_calls=80))
        assert res2.summary["spent"]["paid_calls"] <= 80
        b3 = canned_backend(fp.url, concurrency=8, cache=cache)
        res3 = optimize(task, RunOptions(out=tmp_path / "run", backend=b3, seed=0))
        assert not res3.stopped and res3.summary["trials"]["complete"] + res3.summary["trials"]["pruned"] == 6
        keys = spend_keys(res3.run_dir)
        assert len(keys) == len(set(keys))  # no answered call paid twice
        # equal to an uninterrupted run
        b4 = canned_backend(fp.url, concurrency=8, cache=ResponseCache(tmp_path / "c4.sqlite"))
        clean = optimize(task, RunOptions(out=tmp_path / "clean", backend=b4, seed=0)).summary
        same_result(clean, res3.summary)


def test_max_tokens_budget_stops(tmp_path):
    task = sst2_task(trials=4, bootstrap_examples=0, selectors=["random"])
    b = scripted_for(task)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=b, seed=0, max_tokens=3000))
    assert res.stopped and "--max-tokens" in res.stopped
    assert b.usage.prompt_tokens + b.usage.completion_tokens <= 3000


def test_max_cost_needs_prices(tmp_path):
    task = sst2_task(trials=2)
    b = scripted_for(task)
    b.profile = LMProfile(name="x", backend="openai", base_url="http://127.0.0.1:9/v1", model="unpriced-model")
    with pytest.raises(ConfigError, match="no prices for model 'unpriced-model'"):
        optimize(task, RunOptions(out=tmp_path / "run", backend=b, seed=0, max_cost=1.0))
    assert not (tmp_path / "run").exists()


def test_dry_run_projects_without_calling(tmp_path, capsys):
    from optimizer.cli import main

    code = main(["tasks/sst2/task.yaml", "--dry-run", "--trials", "10", "--max-calls", "500", "--lm", "openai",
                 "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    # trials: 100 validation + 60 cross-fitted training examples each (the default crossfit);
    # test x2 + seed on val + the random k-shot baseline on test; the confirmation sample: 4 prompts x 100
    assert plan["phases"]["search"]["calls"] == 10 * (100 + 60) and plan["phases"]["test"]["calls"] == 2 * 1000 + 100 + 1000
    assert plan["phases"]["confirmation"]["calls"] == 4 * 100
    assert plan["total"]["calls"] == sum(p["calls"] for p in plan["phases"].values())
    assert plan["total"]["prompt_tokens"] > plan["total"]["calls"] * 20 and plan["total"]["cost"] > 0
    assert plan["limits"] == {"max_calls": 500}
    assert not (tmp_path / "run").exists()  # nothing written, nothing spent
    # under --search-calls the confirmation (3 prompts) comes out of the cap: a quarter of the calls setup
    # (4 proposer calls, 48 bootstrap runs) leaves, (1000 - 52) // 4 = 237, pays for (237 - 3) // 3 = 78 examples
    assert main(["tasks/sst2/task.yaml", "--dry-run", "--trials", "10", "--search-calls", "1000", "--lm", "openai",
                 "--json"]) == 0
    capped = json.loads(capsys.readouterr().out)["phases"]
    assert capped["proposer"]["calls"] + capped["bootstrap"]["calls"] == 52
    assert capped["confirmation"]["calls"] == 3 * 78
    assert capped["search"]["calls"] <= 1000 - 52 - 3 * (78 + 1)
    assert main(["tasks/sst2/task.yaml", "--dry-run", "--trials", "10"]) == 0
    text = capsys.readouterr().out
    assert "search" in text and "total" in text and "no LM call" in text


# ------------------------------------------------------------------------ resume (logic)

class _Die(BaseException):
    pass


def test_resume_after_death_mid_trial_matches_uninterrupted(tmp_path, monkeypatch):
    task = sst2_task(trials=8, validation=24, min_examples=14, prune_p=0.3)
    clean = optimize(task, RunOptions(out=tmp_path / "a", backend=scripted_for(task, ResponseCache(tmp_path / "a.db")),
                                      seed=0)).summary
    cache = ResponseCache(tmp_path / "b.db")
    dying = scripted_for(task, cache)
    real = dying._generate
    calls = {"n": 0}

    def generate(req):
        calls["n"] += 1
        if calls["n"] == 130:
            raise _Die()  # like SIGKILL: nothing below this frame runs its clean-up
        return real(req)

    dying._generate = generate
    monkeypatch.setattr(search_mod.Search, "_abandon", lambda self, *a, **k: None)  # the trial stays RUNNING
    with pytest.raises(_Die):
        optimize(task, RunOptions(out=tmp_path / "b", backend=dying, seed=0))
    monkeypatch.undo()
    study = optuna.load_study(study_name="sst2-seed0", storage=f"sqlite:///{tmp_path / 'b' / 'study.db'}")
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    again = optimize(task, RunOptions(out=tmp_path / "b", backend=scripted_for(task, cache), seed=0)).summary
    same_result(clean, again)
    assert clean["trials"]["pruned"] > 0  # the racing path is covered too
    assert again["resumed"] and again["trials"]["complete"] + again["trials"]["pruned"] == 8
    a_recs = (tmp_path / "a" / "trials.jsonl").read_text().splitlines()
    b_recs = (tmp_path / "b" / "trials.jsonl").read_text().splitlines()
    strip = lambda lines: [(r["slot"], r["params"], r["state"], r["score"], r["examples"])  # noqa: E731
                           for r in map(json.loads, lines)]
    assert strip(a_recs) == strip(b_recs)
    keys = spend_keys(tmp_path / "b")
    assert len(keys) == len(set(keys)) == clean["spent"]["paid_calls"]  # nothing answered was paid twice


def test_run_dir_of_another_run_is_refused_untouched(tmp_path):
    task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"])
    optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    # the finished run's study is checkpointed into study.db: no WAL left for a later close to fold in
    assert not (tmp_path / "run" / "study.db-wal").exists()
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="holds a different run"):
        optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=1))
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before == after

