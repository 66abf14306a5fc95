"""SIGKILL mid-run on the real embedded model, then the same command again: the run continues the same study,
pays no answered call twice, runs exactly the configured trials and ends where an uninterrupted run ends."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from conftest import ROOT, run_cli


def tiny_sst2(tmp_path):
    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"] = 40
    data["splits"]["validation"]["limit"] = 24
    data["splits"]["test"]["limit"] = 16
    for k, v in {"max_demos": 4, "demo_sets": 3, "instructions": 4, "proposers": ["offline"],
                 "selectors": ["random"], "min_examples": 8}.items():
        data["optimizer"][k] = v
    for split, f in data["dataset"]["files"].items():
        data["dataset"]["files"][split] = str(ROOT / "tasks/sst2" / f)
    p = tmp_path / "task.yaml"
    p.write_text(yaml.safe_dump(data))
    # the embedded model, one thread: on a shared 2-core machine llama.cpp's spinning threads make a call
    # several times slower with two
    (tmp_path / "local1.yaml").write_text("backend: local\nmodel: gemma3-270m-q4_k_m\nn_threads: 1\n")
    return p


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.integration  # the embedded model (local1.yaml)
def test_sigkill_mid_trial_then_rerun_equals_uninterrupted(tmp_path):
    task = tiny_sst2(tmp_path)
    run_b, cache_b = tmp_path / "b", tmp_path / "cache-b"
    lm = str(tmp_path / "local1.yaml")
    args = [str(task), "--trials", "3", "--seed", "0", "--lm", lm, "--out", str(run_b), "--cache-dir", str(cache_b),
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "optimizer.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        mark = None
        while time.time() < deadline and proc.poll() is None:
            n_trials, n_paid = len(lines(run_b / "trials.jsonl")), len(lines(run_b / "spend.jsonl"))
            if mark is None and n_trials >= 1:
                mark = n_paid
            if mark is not None and n_paid >= mark + 3:
                break  # inside the second trial, a few of its calls answered
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_b / "status.json").read_text())["status"] == "running"  # nothing cleaned up
    storage = f"sqlite:///{run_b / 'study.db'}"
    states = [t.state for t in optuna.load_study(study_name="sst2-seed0", storage=storage).trials]
    assert optuna.trial.TrialState.RUNNING in states  # the trial it was in
    paid_before = len(lines(run_b / "spend.jsonl"))

    r = run_cli(*args)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads((run_b / "summary.json").read_text())
    assert b["resumed"] and b["spent"]["previous_paid_calls"] == paid_before
    keys = [json.loads(x)["key"] for x in lines(run_b / "spend.jsonl")]
    assert len(keys) == len(set(keys)), "an answered call was paid again"
    study = optuna.load_study(study_name="sst2-seed0", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)]
    slots = sorted(t.user_attrs["optimizer:slot"] for t in finished)
    assert slots == [0, 1, 2]  # the configured trials, each exactly once
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.FAIL) == 1  # the killed one
    assert [json.loads(x)["slot"] for x in lines(run_b / "trials.jsonl")] == [0, 1, 2]

    # an uninterrupted run of the same command, served by a copy of that cache: it must ask for exactly
    # the calls the resumed run made (zero paid) and end with the same scores
    cache_a = tmp_path / "cache-a"
    shutil.copytree(cache_b, cache_a)
    r = run_cli(str(task), "--trials", "3", "--seed", "0", "--lm", lm, "--out", str(tmp_path / "a"), "--cache-dir",
                str(cache_a), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["paid_calls"] == 0 and a["cache_hits"] == a["lm_calls"]
    for side in ("baseline", "best"):
        for key in ("val", "test", "test_ci", "instruction", "demo_ids"):
            assert a[side][key] == b[side][key], (side, key)
    assert a["trials"] == {**b["trials"], "failed": 0}
    strip = lambda rows: [(x["slot"], x["params"], x["state"], x["score"], x["examples"])  # noqa: E731
                          for x in map(json.loads, rows)]
    assert strip(lines(tmp_path / "a" / "trials.jsonl")) == strip(lines(run_b / "trials.jsonl"))
    # over both processes, every response in the cache was paid exactly once
    from optimizer.lm.cache import ResponseCache

    assert len(ResponseCache(cache_b / "lm-cache.sqlite")) == len(keys)


def test_ctrl_c_stops_cleanly_and_the_same_command_continues(tmp_path):
    """SIGINT mid-search (remote backend, calls in flight): state written, exit 130, then the same command
    finishes the run without paying an answered call twice."""
    from faultproxy import FaultProxy

    task = tiny_sst2(tmp_path)
    # slow enough answers (0.15 s a call) that the run is still searching when the signal lands: with
    # faster ones a loaded machine could finish the run between the check and the signal
    with FaultProxy(None, latency=0.15) as fp:
        lm = tmp_path / "canned.yaml"
        lm.write_text(yaml.safe_dump({"backend": "openai", "base_url": fp.url, "model": "canned", "max_retries": 2}))
        run = tmp_path / "run"
        args = [str(task), "--trials", "5", "--seed", "1", "--lm", str(lm), "--out", str(run), "--cache-dir",
                str(tmp_path / "cache"), "--concurrency", "4", "--quiet"]
        proc = subprocess.Popen([sys.executable, "-m", "optimizer.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(lines(run / "trials.jsonl")) < 1:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted" in err and "Traceback" not in err
        assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr[-3000:]
        b = json.loads((run / "summary.json").read_text())
        keys = [json.loads(x)["key"] for x in lines(run / "spend.jsonl")]
        assert len(keys) == len(set(keys))
    assert b["resumed"] and b["trials"]["complete"] + b["trials"]["pruned"] == 5


def test_a_ctrl_c_that_sqlalchemy_logs_while_returning_a_connection_prints_no_traceback(monkeypatch, capsys):
    """The signal can land while SQLAlchemy's pool resets a connection; the pool logs it with its traceback
    ("Exception during reset or similar", seen once in CI). The run drops that record and keeps the others."""
    import contextlib
    import logging

    import optimizer.engine
    from optimizer.cli.run import _optimize_until_stopped

    def fake_optimize(task, opts, on_event=None):
        log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
        for exc in (KeyboardInterrupt(), RuntimeError("a real pool error")):
            try:
                raise exc
            except BaseException:
                log.error("Exception during reset or similar", exc_info=True)
        return "done"

    monkeypatch.setattr(optimizer.engine, "optimize", fake_optimize)
    assert _optimize_until_stopped(None, None, contextlib.nullcontext(), lambda *a, **k: None) == "done"
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" not in err and "RuntimeError: a real pool error" in err
    assert err.count("Traceback") == 1
    assert not logging.getLogger("sqlalchemy").handlers  # removed again after the run
