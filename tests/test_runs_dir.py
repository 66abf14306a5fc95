"""Where a run without ``out`` goes: the caller's ``runs_dir`` (the CLI passes experiments/runs), never a
folder the library picks by itself; an unfinished run of the same fingerprint there is continued."""

import pytest

from conftest import sst2_task
from fakes import ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.errors import ConfigError


def scripted_for(task):
    s = make_splits(task)
    return ScriptedBackend({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test})


def test_a_run_needs_out_or_runs_dir_and_touches_nothing_without(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = sst2_task(trials=2, instructions=1)
    with pytest.raises(ConfigError) as err:
        optimize(task, RunOptions(backend=scripted_for(task), seed=0))
    assert err.value.field == "--out" and "runs_dir" in err.value.fix
    assert list(tmp_path.iterdir()) == []


def test_runs_dir_holds_a_new_run_and_the_same_run_continues_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = sst2_task(trials=3, instructions=1, bootstrap_examples=8)
    runs = tmp_path / "runs"
    first = optimize(task, RunOptions(runs_dir=runs, backend=scripted_for(task), seed=0, max_calls=30))
    assert first.stopped and first.run_dir.parent == runs and first.run_dir.name.startswith(f"{task.task}-")
    again = optimize(task, RunOptions(runs_dir=runs, backend=scripted_for(task), seed=0))
    assert again.run_dir == first.run_dir and again.summary["resumed"] and not again.stopped
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
