"""The search levers of issue 5 on the scripted backend (fast logic tests): label-likelihood scoring and
contextual calibration, per-input kNN demos, demo order, the Pareto front and the shortest-within-interval
pick, the search call cap, presets and the reflective proposer. The real-model proofs are in
test_search_levers_real_model.py."""

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import sst2_task
from fakes import ScriptedBackend
from optimizer.data import Example, crossfit_examples, make_splits
from optimizer.engine import RunOptions, make_evaluator, optimize
from optimizer.lm.base import LMResponse
from optimizer.errors import ConfigError
from optimizer.plain_client import KnnIndex, pick_label
from optimizer.program import Candidate
from optimizer.proposers import LMProposer, ProposalContext, ReflectiveProposer
from optimizer.search import (ATTR, SearchSpace, balanced_weights, connect_study, open_storage, pareto_front,
                              pick_best, space_of, startup_trials)
from optimizer.task import apply_preset


def scripted_for(task, **kw):
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    return ScriptedBackend(answers, **kw)


def test_candidate_key_tells_scoring_and_knn_apart():
    a = Candidate("x")
    assert a.key == Candidate("x", scoring="generate").key
    keys = {a.key, Candidate("x", scoring="likelihood").key, Candidate("x", scoring="calibrated").key,
            Candidate("x", knn=2).key}
    assert len(keys) == 4


def test_likelihood_and_calibration_on_a_biased_model():
    task = sst2_task(scoring=["likelihood"])
    backend = scripted_for(task)
    ev = make_evaluator(task, backend.profile, backend)
    val = make_splits(task).validation
    gold_pos = [e for e in val if e.output == "positive"]
    lik = ev.evaluate(Candidate(task.instruction, scoring="likelihood"), val)
    cal = ev.evaluate(Candidate(task.instruction, scoring="calibrated"), val)
    # uncalibrated: the bias toward "negative" wins on every positive example; calibrated: all right
    assert all(o.prediction["sentiment"] == "negative" for o in lik.outcomes)
    assert lik.mean == pytest.approx(1 - len(gold_pos) / len(val))
    assert cal.mean == 1.0 and all(o.parsed for o in cal.outcomes)
    # one call per example, read by both readouts (the second costs only its content-free calibration call);
    # the request asks for 1 token + logprobs
    n_calls = backend.usage.calls
    assert n_calls == len(val) + 1
    req = ev.request(Candidate(task.instruction, scoring="calibrated"), val[0].inputs)
    assert req.max_tokens == 1 and req.logprobs and req.stop == ()
    offsets = ev.calibration(Candidate(task.instruction, scoring="calibrated"))
    assert backend.usage.calls == n_calls  # offsets are computed once
    assert offsets["negative"] > offsets["positive"]


def test_likelihood_needs_labels_and_completion_prompts():
    task = sst2_task()
    backend = scripted_for(task)
    ev = make_evaluator(task, backend.profile, backend)
    ev.adapter_kind = "chat"
    with pytest.raises(ConfigError, match="completion"):
        ev.check_scoring("likelihood")


def test_plain_client_label_pick_matches_the_engine():
    from optimizer.scoring import label_logprobs, pick_label as engine_pick

    top = {" pos": -0.7, " negative": -0.9, " The": -1.2, "Positive": -2.0}
    labels = ["negative", "positive"]
    assert engine_pick(label_logprobs(top, labels)) == pick_label(top, {"labels": labels}) == "positive"
    cal = {"negative": -2.0, "positive": -0.2}
    assert engine_pick(label_logprobs(top, labels), cal) == pick_label(top, {"labels": labels,
                                                                             "calibration": cal}) == "negative"


def test_knn_index_ranks_like_sklearn_tfidf_cosine():
    from sklearn.feature_extraction.text import TfidfVectorizer

    task = sst2_task(train=120)
    pool = [e.inputs["sentence"] for e in make_splits(task).train]
    queries = [e.inputs["sentence"] for e in make_splits(task).validation[:10]]
    vec = TfidfVectorizer().fit(pool)
    sims = (vec.transform(queries) @ vec.transform(pool).T).toarray()
    index = KnnIndex(pool)
    for q, row in zip(queries, sims):
        got = index.nearest(q, 4)
        assert len(got) == 4
        assert got[-1] == int(np.argmax(row))  # most similar last, next to the input
        assert [round(row[i], 9) for i in got] == sorted(round(x, 9) for x in row)[-4:]


def test_knn_candidate_retrieves_per_input_and_search_space_builds_it():
    task = sst2_task()
    splits = make_splits(task)
    space = SearchSpace([(task.instruction, "seed")], [("knn", splits.train), ("random", splits.train[:8])], 8,
                        orders=3)
    c = space.candidate(0, 0, 3)
    assert c.knn == 3 and len(c.demos) == len(splits.train)
    backend = scripted_for(task)
    ev = make_evaluator(task, backend.profile, backend)
    a, b = splits.validation[0], splits.validation[1]
    da, db = ev.demos_for(c, a.inputs), ev.demos_for(c, b.inputs)
    assert len(da) == 3 and da != db
    assert ev.request(c, a.inputs).prompt.count("Sentiment:") == 4
    # demo order: a permutation of the same prefix, stable for an order index
    o0, o2 = space.candidate(0, 1, 5, order=0), space.candidate(0, 1, 5, order=2)
    assert sorted(d.id for d in o0.demos) == sorted(d.id for d in o2.demos) and o0.demos != o2.demos
    assert space.candidate(0, 1, 5, order=2).demos == o2.demos and o0.key != o2.key


class _T:
    def __init__(self, number, value, words, scores):
        self.number, self.value, self.params = number, value, {"i": number}
        self.user_attrs = {"prompt_words": words}
        self.intermediate_values = dict(enumerate(scores))


def test_pareto_front_and_shortest_within_interval():
    rng = np.random.default_rng(0)
    best = _T(1, 0.9, 200, list((rng.random(100) < 0.9).astype(float)))
    near = _T(2, 0.86, 40, [])
    far = _T(3, 0.5, 10, [])
    longer = _T(4, 0.85, 300, [])
    trials = [best, near, far, longer]
    assert pick_best(trials).number == 1
    assert pick_best(trials, "shortest").number == 2  # within the best's 95% interval, far shorter
    front = pareto_front(trials)
    assert [f["trial"] for f in front] == [3, 2, 1]  # shortest first; trial 4 is dominated


def test_a_cross_fitted_tie_goes_to_the_higher_validation_split_mean_before_the_shorter_prompt():
    # GSM8K seed 1 (compare harness, sixteenth pass): 3 of 100 right for both, 0 of 40 validation
    # problems for the shorter prompt and 1 of 40 for the kNN one
    short, knn = _T(0, 0.03, 300, []), _T(1, 0.03, 900, [])
    short.user_attrs["val_mean"], knn.user_attrs["val_mean"] = 0.0, 0.025
    assert pick_best([short, knn]).number == 1
    knn.user_attrs["val_mean"] = 0.0  # a full tie on both means: the shorter prompt
    assert pick_best([short, knn]).number == 0
    del short.user_attrs["val_mean"], knn.user_attrs["val_mean"]  # not cross-fitted: the shorter prompt
    assert pick_best([short, knn]).number == 0


def test_search_call_cap_holds_and_the_run_still_reports_test(tmp_path):
    task = sst2_task(trials=30, bootstrap_examples=0, selectors=["random"], proposers=["offline"], train=100)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0, search_calls=100))
    s = res.summary
    # every call before the test report counts, the confirmation of the top 3 too: the trials stopped short
    # of the cap by what it takes, at most a quarter of it ((25 - 3) // 3 = 7 examples per candidate)
    assert s["search_calls"]["reached"] and s["search_calls"]["spent"] <= 100
    before_test = sum(s["phases"][k]["calls"] for k in ("proposer", "probe", "bootstrap", "search", "confirmation"))
    assert before_test == s["search_calls"]["spent"] and s["phases"]["search"]["calls"] <= 100 - 3 * (7 + 1)
    assert s["confirmation"]["examples"] == 7 and len(s["confirmation"]["candidates"]) == 3
    assert s["search_calls"]["confirmation"] == s["phases"]["confirmation"]["calls"] > 0
    assert s["best"]["test"] is not None and s["trials"]["complete"] + s["trials"]["pruned"] < 30
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert sum(r["lm_calls"] for r in recs) + s["search_calls"]["confirmation"] == s["search_calls"]["spent"]
    best = next(r for r in recs if r["trial"] == s["best"]["trial"])
    assert not best.get("cut_by_budget")


def test_tpe_startup_is_fixed_by_the_creator_and_kept_by_the_study(tmp_path):
    assert startup_trials(60) == 15 and startup_trials(8) == 4  # a quarter of the trials, at least 4
    task = sst2_task(trials=30, bootstrap_examples=0, selectors=["random"], proposers=["offline"])

    def setup_of(out, **kw):
        optimize(task, RunOptions(out=out, backend=scripted_for(task), seed=0, **kw))
        study = optuna.load_study(study_name=f"{task.task}-seed0", storage=open_storage(f"sqlite:///{out}/study.db"))
        return study, study.user_attrs[ATTR + "setup"]

    study, setup = setup_of(tmp_path / "default", search_calls=100)
    assert setup["startup_trials"] == 7
    # the capped run ends before TPE's startup does: every trial's parameters are the random sampler's
    assert len([t for t in study.trials if t.state.is_finished()]) < 7
    task.optimizer.startup_trials = 2
    study, setup = setup_of(tmp_path / "pinned")
    assert setup["startup_trials"] == 2
    # a process joining (or resuming) the study samples with the creator's startup, whatever its --trials
    joined, created = connect_study(open_storage(f"sqlite:///{tmp_path}/pinned/study.db"), f"{task.task}-seed0", 0,
                                    400, prune=True, prune_p=0.1, min_examples=16)
    assert not created and joined.sampler._n_startup_trials == 2


def test_min_validation_scores_trials_on_train_examples_that_leave_the_demo_pool(tmp_path):
    task = sst2_task(trials=3, train=40, validation=10, bootstrap_examples=0, selectors=["random"],
                     proposers=["offline"], prune=False, min_validation=24)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    assert res.summary["splits"] == {"train": 26, "validation": 24, "test": 60}
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert {r["examples"] for r in recs if r["state"] == "complete"} == {24}
    train = make_splits(task).train
    study = optuna.load_study(study_name=f"{task.task}-seed0",
                              storage=open_storage(f"sqlite:///{tmp_path}/run/study.db"))
    pool = {d.id for _, demos in space_of(study, train).demo_sets for d in demos}
    assert pool and not pool & {e.id for e in train[26:]}  # no demo is an example the search scores


def test_a_training_example_is_never_its_own_demo():
    task = sst2_task()
    train = make_splits(task).train
    backend = scripted_for(task)
    ev = make_evaluator(task, backend.profile, backend)
    x = train[0]
    knn = Candidate(task.instruction, tuple(train), knn=3)
    assert ev.demos_for(knn, x.inputs)[-1] == x  # without the exclusion the example is its own nearest demo
    got = ev.demos_for(knn, x.inputs, exclude=x.id)
    assert len(got) == 3 and x not in got
    # the other three nearest: what a pool without the example retrieves
    assert got == ev.demos_for(Candidate(task.instruction, tuple(train[1:]), knn=3), x.inputs)
    fixed = Candidate(task.instruction, tuple(train[:4]))
    assert ev.demos_for(fixed, x.inputs, exclude=x.id) == tuple(train[1:4])
    assert ev.demos_for(fixed, x.inputs, exclude=train[9].id) == tuple(train[:4])
    # run_one scores an example with itself left out: its input appears once in the prompt, as the query
    ev.run_one(fixed, x)
    assert backend.prompts[-1].count(x.inputs["sentence"]) == 1


class CopyBackend(ScriptedBackend):
    """Right only when the input is among the prompt's demos (it copies that demo's label), else ``wrong``."""

    def _generate(self, request):
        prompt = request.prompt
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        copied = prompt.count(f"{self.input_prefix} {last}\n") > 1
        text = self.answers[last] if copied else self.wrong
        return LMResponse(text=f" {text}\n", prompt_tokens=len(prompt.split()), completion_tokens=1)


def test_crossfit_scores_trials_on_training_examples_answered_without_themselves(tmp_path):
    # crossfit 100 >= train 40: every training example is scored beside validation, so every demo is one
    task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"], proposers=["offline"], prune=False,
                     scoring=["generate"], start="demos", max_demos=4, crossfit=100)
    splits = make_splits(task)
    assert crossfit_examples(splits.train, 100, 0, True) == splits.train
    backend = CopyBackend({e.inputs["sentence"]: e.output for e in splits.train + splits.validation + splits.test})
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend, seed=0))
    n_val, n_train = len(splits.validation), len(splits.train)
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in recs] == [n_val + n_train] * 2
    assert all(r["crossfit_examples"] == n_train for r in recs)
    study = optuna.load_study(study_name=f"{task.task}-seed0", storage=open_storage(f"sqlite:///{tmp_path}/run/study.db"))
    demo_trial = next(t for t in study.trials if t.params["n_demos"] > 0)
    demos = space_of(study, splits.train).candidate(0, demo_trial.params["demo_set"], 4).demos
    assert any(d.output != "negative" for d in demos)  # a copy of such a demo would score
    for t in study.trials:  # no example is answered by a copy of itself: the copying LM answers "negative"
        wrong = [float(e.output == "negative") for e in splits.validation + splits.train]
        assert [t.intermediate_values[i] for i in range(n_val + n_train)] == wrong
        rec = next(r for r in recs if r["trial"] == t.number)
        assert rec["val_mean"] == pytest.approx(sum(wrong[:n_val]) / n_val)
    # what is reported is the validation split's score alone
    assert res.summary["best"]["val"] == pytest.approx(sum(wrong[:n_val]) / n_val, abs=1e-6)
    assert res.summary["splits"]["validation"] == n_val


def test_crossfit_examples_are_a_seeded_label_stratified_draw():
    train = [Example(str(i), {"sentence": str(i)}, lab) for i, lab in enumerate("a" * 30 + "b" * 10)]
    got = crossfit_examples(train, 12, 3, True)
    assert got == crossfit_examples(train, 12, 3, True) != crossfit_examples(train, 12, 4, True)
    assert len(got) == 12 and collections.Counter(e.output for e in got) == {"a": 6, "b": 6}
    assert [e.id for e in got] == sorted((e.id for e in got), key=int)  # train's order
    assert crossfit_examples(train, 0, 3, True) == [] and crossfit_examples(train, 99, 3, True) == train


def test_balanced_weights_give_each_label_the_same_total_weight():
    val = [Example(str(i), {"sentence": str(i)}, lab) for i, lab in enumerate("aaaaaabbc")]
    w = balanced_weights(val)
    assert sum(w) == pytest.approx(len(val))  # the weights average 1
    for lab in "abc":
        assert sum(x for x, e in zip(w, val) if e.output == lab) == pytest.approx(len(val) / 3)
    # a prompt that answers "a" everywhere: accuracy 6/9, balanced mean 1/3
    constant = [float(e.output == "a") for e in val]
    assert sum(constant) / len(val) == pytest.approx(6 / 9)
    assert sum(s * x for s, x in zip(constant, w)) / len(val) == pytest.approx(1 / 3)


class CollapseBackend(ScriptedBackend):
    """Zero-shot, answers the validation split's majority label everywhere; with demos, answers the minority
    label everywhere but on one majority example: lower accuracy, higher label-balanced accuracy."""

    def __init__(self, answers, majority, minority, keep):
        super().__init__(answers)
        self.majority, self.minority, self.keep = majority, minority, keep

    def _generate(self, request):
        prompt = request.prompt
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        k = prompt.count(self.output_prefix) - 1
        text = self.majority if k == 0 or last == self.keep else self.minority
        return LMResponse(text=f" {text}\n", prompt_tokens=len(prompt.split()), completion_tokens=1)


def test_balanced_objective_ranks_a_collapsed_prompt_below_one_that_tells_labels_apart(tmp_path):
    def run(objective):
        # two trials: the first fixed demo set (start: demos), then the zero-shot seed prompt
        task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"], proposers=["offline"], prune=False,
                         start="demos", max_demos=2, validation=25, objective=objective)
        val = make_splits(task).validation
        counts = collections.Counter(e.output for e in val)
        (majority, m), (minority, _) = counts.most_common()
        assert m > len(val) / 2  # the check below needs a split with a majority label
        keep = next(e.inputs["sentence"] for e in val if e.output == majority)
        backend = CollapseBackend({e.inputs["sentence"]: e.output for e in val}, majority, minority, keep)
        res = optimize(task, RunOptions(out=tmp_path / objective, backend=backend, seed=0))
        recs = {r["slot"]: r for r in map(json.loads, (tmp_path / objective / "trials.jsonl").read_text().splitlines())}
        return res.summary, recs, len(val), m

    s, recs, n, m = run("mean")
    assert s["objective"] == "mean" and s["best"]["n_demos"] == 0  # accuracy prefers the collapsed prompt
    assert recs[1]["score"] == pytest.approx(m / n) and recs[0]["score"] == pytest.approx((n - m + 1) / n)
    assert "metric_mean" not in recs[0]
    assert s["promotion"]["rule"] == "seed_fallback"  # it does not beat the label prior either (issue 25)
    s, recs, n, m = run("balanced")
    assert s["objective"] == "balanced"
    assert recs[1]["score"] == pytest.approx(0.5) and recs[1]["metric_mean"] == pytest.approx(m / n)
    assert recs[0]["score"] == pytest.approx((1 + 1 / m) / 2)  # the balanced objective ranks the demo prompt first
    assert recs[0]["metric_mean"] == pytest.approx((n - m + 1) / n)
    # but it answers the minority label almost everywhere: degenerate, and no better than always answering the
    # majority label on validation, so the run keeps the seed prompt and says why (issue 25)
    assert recs[0]["degenerate"] is True and recs[1]["degenerate"] is True
    assert s["promotion"]["rule"] == "seed_fallback"
    conf = s["confirmation"]  # the search's winner comes first among the confirmed; promotion starts from the pick
    assert conf["candidates"][0]["trial"] == recs[0]["trial"]
    assert f"trial {conf['chosen_trial']} does not beat" in s["promotion"]["why"]
    assert s["best"]["n_demos"] == 0 and s["best"]["val"] == pytest.approx(m / n)
    assert s["verdict"]["status"] == "no_gain"
    # without a label set the objective is the mean
    task = sst2_task(objective="balanced")
    task.output.labels = None
    assert task.objective == "mean"


def test_a_balanced_tie_between_collapsed_prompts_goes_to_the_higher_plain_mean(tmp_path):
    # the zero-shot seed prompt answers the minority label everywhere, the demo prompt the majority label:
    # both score 0.5 balanced; the shorter (zero-shot) prompt used to win the tie
    task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"], proposers=["offline"], prune=False,
                     start="demos", max_demos=2, validation=25, objective="balanced")
    val = make_splits(task).validation
    (majority, m), (minority, _) = collections.Counter(e.output for e in val).most_common()
    backend = CollapseBackend({e.inputs["sentence"]: e.output for e in val}, minority, majority, keep=None)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend, seed=0))
    recs = {r["slot"]: r for r in map(json.loads, (tmp_path / "run" / "trials.jsonl").read_text().splitlines())}
    assert recs[0]["score"] == recs[1]["score"] == pytest.approx(0.5)
    # the search's winner is the demo prompt (the higher plain mean) ...
    promo = res.summary["promotion"]
    conf = res.summary["confirmation"]
    assert conf["candidates"][0]["trial"] == recs[0]["trial"]
    assert f"trial {conf['chosen_trial']} does not beat" in promo["why"]
    # ... which answers the majority label everywhere: no better than the label prior on validation, and the
    # other one is degenerate too, so the run keeps the seed prompt and says so (issue 25)
    assert promo["rule"] == "seed_fallback" and res.summary["verdict"]["status"] == "no_gain"
    assert res.summary["best"]["n_demos"] == 0 and res.summary["best"]["degenerate"] is True


def test_start_knn_makes_the_kNN_pool_the_first_incumbent():
    train = [Example(str(i), {"sentence": str(i)}, "ab"[i % 2]) for i in range(12)]
    sets = [("random", train[:6]), ("knn", train), ("diverse", train[6:])]
    knn = SearchSpace([("x", "seed")], sets, 6, start="knn", start_demos=4)
    assert knn.fixed_params(0) == {"instruction": 0, "demo_set": 1, "n_demos": 4}
    assert knn.fixed_params(1) == knn.seed_params() and knn.fixed_params(2) is None
    assert knn.of_params(knn.fixed_params(0)).knn == 4
    # no kNN pool: the first fixed set, as start: demos
    no_pool = SearchSpace([("x", "seed")], [sets[0], sets[2]], 6, start="knn")
    assert no_pool.fixed_params(0) == SearchSpace([("x", "seed")], [sets[0], sets[2]], 6, start="demos").fixed_params(0)


def test_start_demos_knn_runs_the_fixed_set_then_the_kNN_pool_then_the_seed_prompt():
    train = [Example(str(i), {"sentence": str(i)}, "ab"[i % 2]) for i in range(12)]
    sets = [("random", train[:6]), ("knn", train), ("diverse", train[6:])]
    both = SearchSpace([("x", "seed")], sets, 6, start="demos+knn", start_demos=4)
    assert both.fixed_params(0) == {"instruction": 0, "demo_set": 0, "n_demos": 4}
    assert both.fixed_params(1) == {"instruction": 0, "demo_set": 1, "n_demos": 4}
    assert both.fixed_params(2) == both.seed_params() and both.fixed_params(3) is None
    assert not both.of_params(both.fixed_params(0)).knn and both.of_params(both.fixed_params(1)).knn == 4
    # no kNN pool: the fixed set once, then the seed prompt
    no_pool = SearchSpace([("x", "seed")], [sets[0], sets[2]], 6, start="demos+knn")
    assert [no_pool.fixed_params(k) for k in range(3)] == [
        SearchSpace([("x", "seed")], [sets[0], sets[2]], 6, start="demos").fixed_params(0), no_pool.seed_params(), None]
    # the study description carries it, so a resumed or joining worker enqueues the same slots
    again = SearchSpace.from_description(both.describe(), train)
    assert [again.fixed_params(k) for k in range(4)] == [both.fixed_params(k) for k in range(4)]


def test_the_demo_pool_keeps_every_index_when_the_bootstrap_teacher_runs_later_or_finds_nothing():
    from optimizer.selectors import SelectionContext, demo_pool, fill_pool

    task = sst2_task(train=40)
    train = make_splits(task).train
    kinds = ["random", "bootstrap", "diverse", "knn"]

    def ctx(backend):
        ev = make_evaluator(task, backend.profile, backend)
        return SelectionContext(train, 0, labels=task.label_set, evaluator=ev, instruction=task.instruction, budget=12)

    good = ctx(scripted_for(task))
    pending = demo_pool(good, 12, 4, kinds, later=True)
    holes = [i for i, (_, s) in enumerate(pending) if not s]
    assert [pending[i][0] for i in holes] == ["bootstrap"] * 3 and holes == [3, 4, 5]
    filled = fill_pool(good, pending, 4)
    assert filled == demo_pool(ctx(scripted_for(task)), 12, 4, kinds)  # later or not, the same pool
    assert [k for k, _ in filled] == ["random"] * 3 + ["bootstrap"] * 3 + ["diverse"] * 3 + ["knn", "random", "random"]
    # a teacher that passes nothing: its indices go to random sets found nowhere else in the pool
    failed = fill_pool(ctx(ScriptedBackend({}, wrong="none")), pending, 4)
    assert len(failed) == len(filled) and [failed[i] for i in range(12) if i not in holes] == [
        filled[i] for i in range(12) if i not in holes]
    assert all(failed[i][0] == "random" for i in holes)
    assert len({tuple(e.id for e in s) for _, s in failed}) == 12


def test_early_slots_are_the_start_trials_a_pending_bootstrap_set_cannot_change():
    train = [Example(str(i), {"sentence": str(i)}, "ab"[i % 2]) for i in range(12)]
    sets = [("random", train[:6]), ("bootstrap", []), ("knn", train)]
    both = SearchSpace([("x", "seed")], sets, 6, start="demos+knn", start_demos=4)
    assert both.early_slots() == 3  # the fixed set, the kNN pool, the seed prompt
    # the first fixed set would be the bootstrap set once filled: only the seed slots after it... none
    first = SearchSpace([("x", "seed")], [sets[1], sets[0], sets[2]], 6, start="demos+knn", start_demos=4)
    assert first.early_slots() == 0
    knn_first = SearchSpace([("x", "seed")], [sets[1], sets[2], sets[0]], 6, start="knn+demos", start_demos=4)
    assert knn_first.early_slots() == 1  # the kNN pool is never a placeholder
    assert SearchSpace([("x", "seed")], sets, 6).early_slots() == 1  # start: seed, the seed prompt


def test_the_start_trials_run_before_the_bootstrap_teacher_and_nothing_else_changes(tmp_path):
    task = sst2_task(trials=6, selectors=["random", "bootstrap", "diverse", "knn"], proposers=["offline"],
                     max_demos=4, bootstrap_examples=12, start="demos+knn", validation=30)
    runs = {}
    for name, kw in (("own", {}), ("shared", {"storage": f"sqlite:///{tmp_path}/shared.db"})):
        backend = scripted_for(task)
        res = optimize(task, RunOptions(out=tmp_path / name, backend=backend, seed=0, concurrency=1, **kw))
        recs = sorted((json.loads(x) for x in (tmp_path / name / "trials.jsonl").read_text().splitlines()),
                      key=lambda r: r["slot"])
        runs[name] = res.summary, recs, backend.prompts, json.loads((tmp_path / name / "candidates.json").read_text())
    (own, own_recs, own_prompts, own_space), (shared, shared_recs, shared_prompts, shared_space) = runs["own"], runs["shared"]
    # with the run's own storage the three fixed slots run first; workers sharing a study keep the old order
    assert own["bootstrap_after_slots"] == 3 and shared["bootstrap_after_slots"] == 0
    teacher = own["phases"]["bootstrap"]["calls"]
    early = sum(r["lm_calls"] for r in own_recs[:3])
    assert teacher == 12 and early > 0
    assert sorted(own_prompts[:early]) == sorted(shared_prompts[teacher:teacher + early])
    assert sorted(own_prompts[early:early + teacher]) == sorted(shared_prompts[:teacher])
    # the same pool, the same trials, the same winner, the same calls
    assert own_space["demo_sets"] == shared_space["demo_sets"]
    strip = lambda r: {k: r[k] for k in ("slot", "params", "score", "state", "lm_calls", "examples")}
    assert [strip(r) for r in own_recs] == [strip(r) for r in shared_recs]
    assert own["best"] == shared["best"] and own["task_lm_calls"] == shared["task_lm_calls"]
    assert own["phases"]["search"]["calls"] == sum(r["lm_calls"] for r in own_recs)


def test_start_demos_races_the_weak_seed_prompt_against_a_demo_incumbent(tmp_path):
    def run(start, **kw):
        task = sst2_task(trials=4, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=6,
                         validation=40, min_examples=14, prune_p=0.2, start=start, **kw)
        out = tmp_path / f"{start}{kw.get('start_demos', '')}"
        res = optimize(task, RunOptions(out=out, backend=scripted_for(task), seed=0))
        return res.summary, [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]

    s, recs = run("demos")
    by_slot = {r["slot"]: r for r in recs}
    # the first trial takes the whole first fixed set (max_demos) unless start_demos says fewer
    assert by_slot[0]["params"]["n_demos"] == 6 and by_slot[0]["params"]["instruction"] == 0
    _, recs4 = run("demos", start_demos=4)
    assert next(r for r in recs4 if r["slot"] == 0)["params"]["n_demos"] == 4
    assert by_slot[0]["state"] == "complete" and by_slot[0]["examples"] == 40
    assert by_slot[1]["params"]["n_demos"] == 0 and by_slot[1]["params"]["instruction"] == 0  # the seed prompt
    assert by_slot[1]["state"] == "pruned" and by_slot[1]["examples"] < 40
    assert s["baseline"]["val"] is not None  # the seed prompt is still reported on the whole validation split
    s0, recs0 = run("seed")
    first = next(r for r in recs0 if r["slot"] == 0)
    assert first["params"]["n_demos"] == 0 and first["state"] == "complete" and first["examples"] == 40
    assert s0["baseline"]["val"] == s["baseline"]["val"]
    # the setting is stored with the study's space, so other workers and resumes use the same slots
    desc = json.loads((tmp_path / "demos" / "candidates.json").read_text())
    train = make_splits(sst2_task(validation=40)).train
    space = SearchSpace.from_description(desc, train)
    assert (space.start, space.start_demos) == ("demos", 6)
    # a study described before start_demos existed started with 4 demos, and resumes that way
    old = SearchSpace.from_description({k: v for k, v in desc.items() if k != "start_demos"}, train)
    assert old.start_params()["n_demos"] == 4


def test_scoring_as_a_search_dimension_finds_calibration(tmp_path):
    task = sst2_task(trials=8, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=1,
                     scoring=["generate", "likelihood", "calibrated"])
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    s = res.summary
    assert s["baseline"]["scoring"] == "generate"
    assert s["best"]["scoring"] == "calibrated" and s["best"]["val"] == 1.0
    assert set(s["best"]["calibration"]) == {"negative", "positive"}
    study = optuna.load_study(study_name="sst2-seed0", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert {t.params.get("scoring") for t in study.trials} >= {"calibrated"}
    assert s["pareto"] and s["pareto"][-1]["val"] == 1.0


def test_joint_readouts_score_each_prompt_under_both_readouts_from_one_pass(tmp_path):
    def run(readouts):
        task = sst2_task(trials=6, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=1,
                         scoring=["likelihood", "calibrated"], validation=24, prune=False, readouts=readouts)
        out = tmp_path / str(readouts)
        res = optimize(task, RunOptions(out=out, backend=scripted_for(task), seed=0))
        return res, [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]

    res, recs = run(None)  # the default: joint
    assert all("scoring" not in r["params"] for r in recs)  # the readout is not a search dimension
    for r in recs:  # the biased model: calibration fixes every answer, the raw likelihood misses positives
        assert r["readouts"]["calibrated"] == 1.0 > r["readouts"]["likelihood"] and r["readout"] == "calibrated"
        assert r["score"] == 1.0 and r["lm_calls"] <= 24 + 1  # one pass, plus one calibration call
    assert res.best.scoring == "calibrated" and res.summary["best"]["scoring"] == "calibrated"
    assert json.loads((tmp_path / "None" / "candidates.json").read_text())["joint"] is True

    searched, srecs = run("searched")
    assert all("scoring" in r["params"] and "readouts" not in r for r in srecs)
    assert srecs[0]["params"]["scoring"] == "likelihood" and srecs[0]["score"] < 1.0  # the seed slot's readout


def test_a_joint_trial_chooses_its_readout_on_the_first_examples_and_reports_it(tmp_path):
    task = sst2_task(trials=3, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=1,
                     scoring=["likelihood", "calibrated"], validation=40, min_examples=10)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    study = optuna.load_study(study_name="sst2-seed0", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        assert t.user_attrs["optimizer:readout"] == "calibrated"
        # every step is reported, under the chosen readout (calibration: all right)
        assert len(t.intermediate_values) == 40 and set(t.intermediate_values.values()) == {1.0}
    assert res.best.scoring == "calibrated"


class _HiddenBias(ScriptedBackend):
    """The scripted model whose bias toward ``wrong`` does not show on the content-free input: contextual
    calibration cannot remove it, batch calibration (offsets from the real inputs) does."""

    def _generate(self, request):
        resp = super()._generate(request)
        if request.logprobs and request.prompt.rstrip().endswith("N/A\nSentiment:"):
            resp.logprobs[0] = {f" {lab}": -3.0 for lab in self.labels}
        return resp


def test_batch_calibration_is_a_joint_readout_read_off_the_same_pass(tmp_path):
    from optimizer.export import build_artifact
    from optimizer.plain_client import pick_label as client_pick
    from optimizer.runread import FinishedRun

    task = sst2_task(trials=4, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=1,
                     scoring=["auto"], validation=24, prune=False)
    backend = _HiddenBias(scripted_for(task).answers)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend, seed=0))
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert recs and all(r["state"] == "complete" for r in recs)
    for r in recs:  # auto: three readouts of one pass; only batch calibration sees the bias
        assert set(r["readouts"]) == {"likelihood", "calibrated", "batch"}
        assert r["readouts"]["batch"] == 1.0 > r["readouts"]["calibrated"] == r["readouts"]["likelihood"]
        assert r["readout"] == "batch" and r["lm_calls"] <= 24 + 1  # no call for the batch readout
    best = res.best
    assert best.scoring == "batch" and dict(best.offsets)["negative"] > dict(best.offsets)["positive"]
    assert res.summary["best"]["test"] == 1.0  # the offsets estimated on validation carry over to test
    assert res.summary["best"]["calibration"] == pytest.approx(dict(best.offsets), abs=1e-6)
    back = FinishedRun.open(tmp_path / "run").candidate("best")  # the run directory keeps the offsets
    assert back.key == best.key and back.scoring == "batch"
    spec = build_artifact(FinishedRun.open(tmp_path / "run"), "yaml")["output_parsing"]
    assert spec["calibration_source"] == "validation-batch"
    ev = make_evaluator(task, backend.profile, backend)
    for e in make_splits(task).test[:8]:  # the exported rule answers as the engine does
        top = backend.complete(ev.request(best, e.inputs)).logprobs[0]
        assert client_pick(top, spec) == ev.run_one(best, e).prediction["sentiment"] == e.output


def test_the_balanced_objective_weighs_every_joint_readout(tmp_path):
    task = sst2_task(trials=3, bootstrap_examples=0, selectors=["random"], proposers=["offline"], max_demos=1,
                     scoring=["auto"], validation=25, prune=False, objective="balanced")
    val = make_splits(task).validation
    neg = sum(e.output == "negative" for e in val) / len(val)
    assert neg != 0.5
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=_HiddenBias(scripted_for(task).answers), seed=0))
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert recs and all(r["state"] == "complete" for r in recs)
    for r in recs:  # the bias makes the two calibration-free readouts answer "negative" everywhere
        assert r["readouts"]["likelihood"] == r["readouts"]["calibrated"] == pytest.approx(0.5)
        assert r["readouts"]["batch"] == 1.0 == r["score"] == r["metric_mean"] and r["readout"] == "batch"
    assert res.summary["objective"] == "balanced" and res.summary["best"]["val"] == 1.0


def test_batch_calibration_needs_joint_readouts(tmp_path):
    for scoring, readouts in ((["batch"], None), (["likelihood", "batch"], "searched"),
                              (["generate", "batch"], None)):
        task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"], proposers=["offline"],
                         scoring=scoring, readouts=readouts)
        with pytest.raises(ConfigError, match="batch") as err:
            optimize(task, RunOptions(out=tmp_path / str(len(scoring)) / str(readouts), backend=scripted_for(task)))
        assert err.value.field == "optimizer.scoring"
    # auto with searched readouts leaves batch out
    task = sst2_task(trials=2, bootstrap_examples=0, selectors=["random"], proposers=["offline"], scoring=["auto"],
                     readouts="searched")
    res = optimize(task, RunOptions(out=tmp_path / "auto", backend=scripted_for(task)))
    assert json.loads((tmp_path / "auto" / "candidates.json").read_text())["scorings"] == ["likelihood", "calibrated"]
    assert res.best.scoring in ("likelihood", "calibrated")


def test_knn_winner_round_trips_through_the_run_directory(tmp_path):
    from optimizer.runread import FinishedRun

    task = sst2_task(trials=6, bootstrap_examples=0, selectors=["knn"], proposers=["offline"], demo_sets=1)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted_for(task), seed=0))
    best = res.best
    assert best.knn > 0 and json.loads((tmp_path / "run" / "demo_pool.json").read_text())["knn"] == best.knn
    back = FinishedRun.open(tmp_path / "run").candidate("best")
    assert back.key == best.key and back.knn == best.knn


def test_preset_replaces_only_the_keys_it_names(tmp_path):
    task = sst2_task(trials=5)
    p = tmp_path / "p.yaml"
    p.write_text("optimizer:\n  scoring: [calibrated]\n  demo_orders: 2\n")
    t2 = apply_preset(task, str(p))
    assert t2.optimizer.scoring == ["calibrated"] and t2.optimizer.demo_orders == 2 and t2.optimizer.trials == 5
    assert t2.path == task.path
    p.write_text("optimizer:\n  scorng: [calibrated]\n")
    with pytest.raises(ConfigError) as e:
        apply_preset(task, str(p))
    assert "optimizer.scorng" in str(e.value) and "p.yaml" in str(e.value)
    with pytest.raises(ConfigError, match="unknown optimizer preset"):
        apply_preset(task, "no-such-preset")


PRESETS = Path(__file__).resolve().parents[1] / "configs/optimizer"
ABLATIONS = Path(__file__).resolve().parents[1] / "experiments/presets"
USER_PRESETS = ("fast", "small-model", "small-model-crossfit-both")


def _check_preset(ref, path):
    import yaml

    keys = yaml.safe_load(path.read_text())["optimizer"]
    task = sst2_task(trials=5)
    t2 = apply_preset(task, ref)
    for key, value in keys.items():
        assert getattr(t2.optimizer, key) == value, key
    for name in type(task.optimizer).model_fields:
        if name not in keys:
            assert getattr(t2.optimizer, name) == getattr(task.optimizer, name), name


def test_the_user_presets_are_three_each_described_in_one_sentence():
    import yaml

    assert sorted(p.stem for p in PRESETS.glob("*.y*ml")) == sorted(USER_PRESETS)
    for name in USER_PRESETS:
        desc = " ".join(yaml.safe_load((PRESETS / f"{name}.yaml").read_text())["description"].split())
        assert desc.endswith(".") and ". " not in desc, name


@pytest.mark.parametrize("preset", USER_PRESETS)
def test_every_user_preset_applies_by_name(preset):
    _check_preset(preset, PRESETS / f"{preset}.yaml")


@pytest.mark.parametrize("preset", sorted(p.name for p in ABLATIONS.glob("*.yaml")))
def test_every_ablation_preset_applies_by_path(preset):
    _check_preset(str(ABLATIONS / preset), ABLATIONS / preset)


class _Writer(ScriptedBackend):
    """A proposer LM that writes a fixed on-topic instruction; the task prompt answers every example right
    under that instruction when ``helps`` (else as the scripted model does under any instruction)."""

    FIX = "Decide whether the movie review sentiment is positive or negative."

    def __init__(self, answers, helps: bool = True):
        super().__init__(answers)
        self.helps = helps

    def _generate(self, request):
        from optimizer.lm.base import LMResponse

        if "Improved instruction:" in (request.prompt or ""):
            self.prompts.append(request.prompt)
            return LMResponse(text=f" {self.FIX}\n")
        if self.helps and self.FIX in (request.prompt or ""):
            last = request.prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
            return LMResponse(text=f" {self.answers.get(last, self.wrong)}\n", prompt_tokens=1, completion_tokens=1)
        return super()._generate(request)


def test_reflective_proposer_sees_failures_and_history():
    task = sst2_task()
    splits = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in splits.train}
    backend = _Writer(answers)
    ev = make_evaluator(task, backend.profile, backend)
    ctx = ProposalContext(task, splits.train, 0, backend, evaluator=ev)
    found = ReflectiveProposer().propose(ctx, 2)
    assert [p.origin for p in found] == ["reflective"]  # the second draft repeats the first: filtered
    meta = next(p for p in backend.prompts if "Improved instruction:" in p)
    assert "Expected sentiment:" in meta and "Produced:" in meta and task.instruction in meta
    hist = ctx.notes["reflective_history"]
    assert hist[0]["instruction"] == task.instruction and len(hist) == 2
    assert ctx.notes["probe_usage"]["calls"] > 0
    # accepted because it beats its parent on the probe; the notes say so, with the task words it shares
    (acc,) = ctx.notes["accepted"]
    assert acc["origin"] == "reflective" and acc["text"] == _Writer.FIX and acc["parent"] == task.instruction
    assert acc["probe"] == 1.0 > acc["parent_probe"] and "sentiment" in acc["task_words"]
    assert found[0].check["probe"] == 1.0


def test_reflective_draft_that_does_not_beat_its_parent_stays_out():
    task = sst2_task()
    splits = make_splits(task)
    backend = _Writer({e.inputs["sentence"]: e.output for e in splits.train}, helps=False)
    ctx = ProposalContext(task, splits.train, 0, backend, evaluator=make_evaluator(task, backend.profile, backend))
    assert ReflectiveProposer().propose(ctx, 2) == []
    (rej,) = ctx.notes["rejected"]
    assert rej["reason"] == "does not beat its parent on the probe" and rej["probe"] == rej["parent_probe"]


def test_lm_drafts_are_listed_with_their_check_or_the_reason_they_failed():
    task = sst2_task()
    ctx = ProposalContext(task, make_splits(task).train, 0, None)
    prop = LMProposer()
    ok = prop.check("Label the movie review as positive or negative sentiment.", ctx, [])
    assert ok["passed"] and {"review", "sentiment"} <= set(ok["task_words"])
    off = prop.check("A state is now in the process of reducing federal spending on healthcare.", ctx, [])
    assert not off["passed"] and off["reason"].startswith("off topic")
    assert prop.check("Too short.", ctx, [])["reason"] == "2 words (4 to 80 wanted)"
    assert prop.check("Which sentiment does the movie review express?", ctx, [])["reason"].startswith("a question")
    one = prop.check("Read the movie review carefully. The correct answer is \"positive\".", ctx, [])
    assert one["reason"] == "gives one answer for every input (positive)"
    shot = Example("x", {"sentence": "Tom Hanks is wonderful as the lonely castaway in this film"}, "positive")
    named = prop.check("Decide the movie review sentiment the way Hanks would.", ctx, [shot])
    assert named["reason"] == "names what one example is about (Hanks)"
    # a capitalised function word run into the line (a list the model wrote) is not a name
    shot_the = Example("y", {"sentence": "The castaway is lonely and The film knows it"}, "positive")
    listed = prop.check("Look for the movie review's tone, its praise or blame The sentiment words", ctx, [shot_the])
    assert listed["passed"], listed
    quoted = prop.check("Label the sentiment; e.g. tom hanks is wonderful, as the lonely castaway -> positive.",
                        ctx, [shot])
    assert quoted["reason"] == "quotes a training input"
    # a task of several labels: naming one of them steers every input to it; naming them all does not
    from conftest import ROOT
    from optimizer.task import load_task

    agnews = ProposalContext(load_task(ROOT / "tasks/ag_news/task.yaml"), ctx.train, 0, None, chat=True)
    steer = prop.check("Classify the topic of the news article as \"technology\".", agnews, [])
    assert steer["reason"] == "names one answer of several (technology)"
    assert prop.check("Classify the news article's topic as world, sports, business or technology.", agnews,
                      [])["passed"]
    assert prop.check("Answer positive when the movie review praises the film.", ctx, [])["passed"]  # two labels
    chat = ProposalContext(task, ctx.train, 0, None, chat=True)
    echo = prop.check("Decide the movie review sentiment: what to decide and what to look for in the input.", chat, [])
    assert echo["reason"] == "repeats the request it was given"


def test_a_task_that_names_no_optimizer_keys_gets_the_measured_best_method():
    """The engine's defaults are the settings of `small-model-crossfit-both`, the best method of the
    comparison: a preset file that names them changes nothing about a task that sets none of them."""
    import yaml

    from optimizer.task import OptimizerSpec

    best = yaml.safe_load((PRESETS / "small-model-crossfit-both.yaml").read_text())["optimizer"]
    defaults = OptimizerSpec()
    for key, value in best.items():
        assert getattr(defaults, key) == value, key
    task = sst2_task(engine_defaults=True)
    assert apply_preset(task, "small-model-crossfit-both").optimizer == task.optimizer


class _NoLogprobs(ScriptedBackend):
    """An endpoint that ignores the request for log-probabilities (as some OpenAI-compatible servers do)."""

    def _generate(self, request):
        resp = super()._generate(request)
        if request.logprobs:
            last = request.prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
            gold = self.answers.get(last)
            h = int(hashlib.sha1(last.encode()).hexdigest(), 16) % 10
            return LMResponse(text=f" {gold if gold and h < 6 else self.wrong}\n", prompt_tokens=resp.prompt_tokens,
                              completion_tokens=1)
        return resp


def test_auto_scoring_reads_generated_text_when_the_lm_gives_no_logprobs(tmp_path):
    task = sst2_task(engine_defaults=True, trials=3, bootstrap_examples=0, proposers=["offline"], crossfit=0)
    s = make_splits(task)
    backend = _NoLogprobs({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test})
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend))
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    assert cands["scorings"] == ["generate"] and "no log-probabilities" in cands["scoring_note"]
    assert res.best.scoring == "generate" and res.summary["best"]["test"] > 0
    # where they come back, auto reads labels and says nothing
    with_lp = scripted_for(task)
    optimize(task, RunOptions(out=tmp_path / "lp", backend=with_lp))
    cands = json.loads((tmp_path / "lp" / "candidates.json").read_text())
    assert cands["scorings"] == ["likelihood", "calibrated", "batch"] and "scoring_note" not in cands
