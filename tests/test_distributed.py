"""Several `optimize` workers share one study: 4 processes on PostgreSQL, and 2 in-process workers each on a
Redis journal and a journal file. Every configured trial runs exactly once, none is lost, and every worker writes the
same final summary. The LM is the canned loopback server of tests/faultproxy.py (fast, deterministic)."""

import json
import subprocess
import sys
import threading
import uuid

import optuna
import pytest
import yaml

from conftest import ROOT, sst2_task
from faultproxy import FaultProxy
from optimizer.search import ATTR, open_storage

PG = "postgresql://postgres@127.0.0.1:5432/test"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def canned():
    with FaultProxy(None, latency=0.02) as fp:
        yield fp


def write_task(tmp_path, url):
    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"] = 40
    data["splits"]["validation"]["limit"] = 16
    data["splits"]["test"]["limit"] = 16
    for k, v in {"max_demos": 4, "demo_sets": 4, "instructions": 4, "bootstrap_examples": 8,
                 "proposers": ["offline"], "min_examples": 8}.items():
        data["optimizer"][k] = v
    for split, f in data["dataset"]["files"].items():
        data["dataset"]["files"][split] = str(ROOT / "tasks/sst2" / f)
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump({"backend": "openai", "base_url": url, "model": "canned",
                                                      "api": "completions", "max_retries": 3, "timeout": 10}))
    return tmp_path / "task.yaml", tmp_path / "lm.yaml"


def run_workers(tmp_path, canned, storage, study, n_workers, trials):
    task, lm = write_task(tmp_path, canned.url)
    procs = [subprocess.Popen([sys.executable, "-m", "optimizer.cli", str(task), "--lm", str(lm), "--storage", storage,
                               "--study", study, "--trials", str(trials), "--out", str(tmp_path / f"w{i}"),
                               "--cache-dir", str(tmp_path / f"cache{i}"), "--concurrency", "4", "--quiet"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(n_workers)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    for p, e in zip(procs, errs):
        assert p.returncode == 0, e[-3000:]
    return [json.loads((tmp_path / f"w{i}" / "summary.json").read_text()) for i in range(n_workers)]


def check_study(study, trials, summaries):
    all_trials = study.get_trials()
    assert len(all_trials) == trials  # no extra, no duplicate
    assert all(t.state in FINISHED for t in all_trials)
    assert sorted(t.user_attrs[ATTR + "slot"] for t in all_trials) == list(range(trials))
    workers = {t.system_attrs[ATTR + "worker"] for t in all_trials}
    first = summaries[0]
    for s in summaries[1:]:
        for side in ("baseline", "best"):
            for key in ("val", "test", "test_ci", "instruction", "demo_ids"):
                assert s[side][key] == first[side][key]
        assert s["trials"] == first["trials"]
    assert first["trials"]["complete"] + first["trials"]["pruned"] == trials
    return workers


@pytest.mark.integration  # a real PostgreSQL server
def test_four_processes_share_one_postgresql_study(tmp_path, canned):
    name = f"test-pg-{uuid.uuid4().hex[:10]}"
    storage = open_storage(PG)
    try:
        summaries = run_workers(tmp_path, canned, PG, name, 4, 8)
        study = optuna.load_study(study_name=name, storage=storage)
        workers = check_study(study, 8, summaries)
        assert len(workers) >= 2, workers
        assert summaries[0]["study"]["storage"] == PG and summaries[0]["study"]["workers"] == len(workers)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


def run_threads(tmp_path, url, study_name, trials, n=2):
    from fakes import ScriptedBackend
    from optimizer.data import make_splits
    from optimizer.engine import RunOptions, optimize

    task = sst2_task(trials=trials, validation=16, bootstrap_examples=8)
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = optimize(task, RunOptions(out=tmp_path / f"w{i}", backend=ScriptedBackend(answers), seed=0,
                                                   storage=url, study=study_name)).summary
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return [results[i] for i in range(n)]


@pytest.mark.integration  # a real Redis server
def test_workers_share_a_redis_journal(tmp_path):
    import redis

    prefix = f"test-optimizer-{uuid.uuid4().hex[:10]}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    try:
        summaries = run_threads(tmp_path, url, "redis-study", 8)
        check_study(optuna.load_study(study_name="redis-study", storage=open_storage(url)), 8, summaries)
    finally:
        r = redis.Redis(host="127.0.0.1", port=6379)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


def test_workers_share_a_journal_file(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    summaries = run_threads(tmp_path, url, "journal-study", 8)
    check_study(optuna.load_study(study_name="journal-study", storage=open_storage(url)), 8, summaries)


def test_storage_url_password_never_written(tmp_path, canned):
    """A storage URL with a password that cannot connect: one line, the password redacted."""
    from optimizer.cli import main

    task, lm = write_task(tmp_path, canned.url)
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        code = main([str(task), "--lm", str(lm), "--storage", "postgresql://postgres:hunter2-secret@127.0.0.1:1/test",
                     "--out", str(tmp_path / "run")])
    assert code == 2
    err = buf.getvalue()
    assert "hunter2-secret" not in err and "--storage" in err and "***" in err
    assert not (tmp_path / "run").exists()
