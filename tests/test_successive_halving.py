"""Successive halving on shared validation examples (`racing: halving`): the pruner's rule on hand-made
trials, and whole runs on the scripted backend (shared order, cuts only at rungs, deterministic)."""

import json

import optuna
import pytest

from conftest import sst2_task
from fakes import ScriptedBackend
from optimizer.data import Example, make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.errors import ConfigError
from optimizer.search import PairedHalvingPruner
from optimizer.search import shared_validation_order as shared_order


def scripted_for(task):
    s = make_splits(task)
    return ScriptedBackend({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test})


def _study_with(runs):
    """A study holding one finished trial per list of per-example scores (steps 0..len-1)."""
    study = optuna.create_study(direction="maximize")
    for scores in runs:
        t = study.ask()
        for k, v in enumerate(scores):
            t.report(v, k)
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


def _decide(study, pruner, scores):
    t = study.ask()
    for k, v in enumerate(scores):
        t.report(v, k)
    return pruner.prune(study, study._storage.get_trial(t._trial_id))


def test_rungs_are_min_examples_times_powers_of_the_rate():
    p = PairedHalvingPruner(4, 3)
    assert [r for r in range(1, 120) if p.rung(r)] == [4, 12, 36, 108]


def test_a_trial_goes_on_only_among_the_best_share_on_the_same_examples():
    pruner = PairedHalvingPruner(4, 2)
    # three earlier trials; on the first 4 examples their means are 1.0, 0.75, 0.25
    study = _study_with([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    # 4 trials at the rung: the best ceil(4/2) = 2 go on, i.e. a mean of at least 0.75
    assert _decide(study, pruner, [1, 1, 0, 1]) is False  # 0.75: ties the second best, goes on
    # 0.5: now 5 trials (the running one above counts too), the best 3 go on, i.e. at least 0.75
    assert _decide(study, pruner, [1, 0, 1, 0]) is True
    assert _decide(study, pruner, [1, 1, 1]) is False  # not at a rung: never cut between rungs
    # paired: only the same examples count. At 8 examples only the first trial (mean 0.5) has them all.
    study2 = _study_with([[1, 1, 1, 1, 0, 0, 0, 0]])
    assert _decide(study2, pruner, [1, 1, 1, 1, 1, 0, 0, 0]) is False  # 0.625 >= 0.5
    # 0.375; three trials have all 8 now (0.5, 0.625 and this one): the best 2 go on, i.e. at least 0.5
    assert _decide(study2, pruner, [0, 0, 0, 0, 1, 1, 1, 0]) is True


def test_shared_order_keeps_every_prefix_near_the_label_mix():
    # 70% "No" as in BBH navigate's validation split, in a clumped input order
    val = [Example(f"e{i}", {"q": str(i)}, "Yes" if i < 18 else "No") for i in range(60)]
    order = shared_order(val, 0, stratify=True)
    assert sorted(order) == list(range(60)) and order == shared_order(val, 0, stratify=True)
    assert order != shared_order(val, 1, stratify=True)
    for r in range(1, 61):
        yes = sum(val[i].output == "Yes" for i in order[:r])
        assert abs(yes - 0.3 * r) <= 1, (r, yes)
    plain = shared_order(val, 0)
    assert sorted(plain) == list(range(60)) and plain != order


def test_halving_run_shares_one_order_and_cuts_only_at_rungs(tmp_path):
    def run(name, **kw):
        task = sst2_task(trials=10, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=6,
                         validation=40, min_examples=5, racing="halving", **kw)
        res = optimize(task, RunOptions(out=tmp_path / name, backend=scripted_for(task), seed=0))
        recs = [json.loads(x) for x in (tmp_path / name / "trials.jsonl").read_text().splitlines()]
        study = optuna.load_study(study_name="sst2-seed0", storage=f"sqlite:///{tmp_path / name / 'study.db'}")
        return res.summary, recs, study

    s, recs, study = run("a")
    assert len(recs) == 10
    states = {r["state"] for r in recs}
    assert states == {"complete", "pruned"}
    for r in recs:  # cut only at a rung (5, 10, 20), else seen the whole split
        assert r["examples"] in ((5, 10, 20) if r["state"] == "pruned" else (40,))
    for t in study.trials:  # example k of the shared order is step k in every trial
        assert sorted(t.intermediate_values) == list(range(len(t.intermediate_values)))
    # same examples in the same order: the scripted model answers a given example the same way whatever
    # the trial, so two trials with the same candidate report identical step values
    by_key = {}
    for t in study.trials:
        by_key.setdefault(t.user_attrs["candidate_key"], []).append(t.intermediate_values)
    for runs in by_key.values():
        n = min(len(v) for v in runs)
        assert all([v[k] for k in range(n)] == [runs[0][k] for k in range(n)] for v in runs)
    assert s["best"]["val"] == max(r["score"] for r in recs if r["state"] == "complete")
    # deterministic: the same seed gives the same trials
    s2, recs2, _ = run("b")
    assert [(r["params"], r["state"], r["examples"], r["score"]) for r in recs2] == \
        [(r["params"], r["state"], r["examples"], r["score"]) for r in recs]
    assert s2["best"]["val"] == s["best"]["val"] and s2["best"]["test"] == s["best"]["test"]


def test_halving_spends_fewer_calls_per_trial_than_wilcoxon(tmp_path):
    used = {}
    for racing in ("wilcoxon", "halving"):
        task = sst2_task(trials=12, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=6,
                         validation=40, min_examples=5, racing=racing)
        res = optimize(task, RunOptions(out=tmp_path / racing, backend=scripted_for(task), seed=0))
        used[racing] = res.summary["phases"]["search"]["calls"]
    assert used["halving"] < used["wilcoxon"]


def test_bad_racing_value_is_one_config_error():
    with pytest.raises(ConfigError) as e:
        sst2_task(racing="halfing")
    assert "racing" in str(e.value)
    with pytest.raises(ConfigError):
        sst2_task(racing="halving", halving_rate=1)
