"""The issue-5 levers on the real embedded model: label-likelihood scoring through llama.cpp in-process
and through a real llama.cpp server's ``/v1/completions`` logprobs, and a whole run with calibrated
scoring and per-input (kNN) demos whose yaml export passes its parity check through the plain
``openai`` client."""

import json

import pytest

from conftest import run_cli
from conftest_runs import small_sst2_task
from optimizer.data import make_splits
from optimizer.engine import make_evaluator, resolve_lm
from optimizer.errors import ConfigError
from optimizer.export import build_artifact, export_run
from optimizer.lm import create_backend
from optimizer.lm.profiles import LMProfile
from optimizer.program import Candidate
from optimizer.runread import FinishedRun
from optimizer.search import balanced_weights, open_storage
from optimizer.task import load_task

pytestmark = pytest.mark.integration  # the embedded model (and a llama.cpp server)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    task = load_task(small_sst2_task(root / "task.yaml"))
    return task, make_splits(task)


def test_likelihood_scoring_on_the_embedded_model_always_answers_a_label(small):
    task, splits = small
    profile = resolve_lm(task, None)
    backend = create_backend(profile, cache=False)
    ev = make_evaluator(task, profile, backend)
    val = splits.validation
    gen = ev.evaluate(Candidate(task.instruction), val)
    lik = ev.evaluate(Candidate(task.instruction, scoring="likelihood"), val)
    cal = ev.evaluate(Candidate(task.instruction, scoring="calibrated"), val)
    backend.close()
    # zero-shot, the base model rarely writes a label word (0.07 on 100 validation sentences); read off
    # the label log-probabilities it answers a label whenever one is among the top-20 next tokens (else
    # nothing, scored wrong) and is right far more often
    labels = {"negative", "positive"}
    said = [o.prediction["sentiment"].strip().lower() in labels for o in gen.outcomes]
    picked = [o.prediction["sentiment"] in labels for o in lik.outcomes]
    print(f"label answers: generated {sum(said)}/{len(val)}, likelihood {sum(picked)}/{len(val)}; "
          f"accuracy {gen.mean:.3f} / {lik.mean:.3f} / calibrated {cal.mean:.3f}")
    assert sum(said) < len(val) // 2 and sum(picked) >= 0.8 * len(val)
    assert all(o.parsed == (o.prediction["sentiment"] in labels) for o in lik.outcomes + cal.outcomes)
    assert lik.mean > gen.mean + 0.2 and cal.mean > gen.mean + 0.2


def test_both_readouts_of_a_prompt_come_from_one_pass_on_the_embedded_model(small):
    task, splits = small
    profile = resolve_lm(task, None)
    val = splits.validation
    demos = tuple(splits.train[:4])
    joint_be = create_backend(profile, cache=False)
    joint = make_evaluator(task, profile, joint_be)
    lik = joint.evaluate(Candidate(task.instruction, demos, scoring="likelihood"), val)
    cal = joint.evaluate(Candidate(task.instruction, demos, scoring="calibrated"), val)
    assert joint_be.usage.calls == len(val) + 1  # the second readout costs its content-free call only
    # batch calibration: offsets from the same pass's label log-probabilities, no call at all
    bat_cand = joint.with_batch_offsets(Candidate(task.instruction, demos, scoring="likelihood"), val)
    bat = joint.evaluate(bat_cand, val)
    assert joint_be.usage.calls == len(val) + 1
    offsets = dict(bat_cand.offsets)
    assert set(offsets) == {"negative", "positive"} and all(-20 < v < 0 for v in offsets.values())
    assert all(o.parsed for o in bat.outcomes)
    print(f"readouts on {len(val)} validation sentences: likelihood {lik.mean:.3f}, calibrated {cal.mean:.3f}, "
          f"batch {bat.mean:.3f} (offsets {offsets})")
    joint_be.close()
    alone_be = create_backend(profile, cache=False)  # the calibrated readout on its own, on a fresh evaluator
    alone = make_evaluator(task, profile, alone_be).evaluate(Candidate(task.instruction, demos, scoring="calibrated"),
                                                              val)
    alone_be.close()
    # llama.cpp's logits move slightly with what its prompt cache held before (the calibration call ran
    # first here, last above): near-tied labels can flip, so agreement, not identity
    same = sum(a.prediction == b.prediction for a, b in zip(cal.outcomes, alone.outcomes))
    print(f"calibrated readout: {same}/{len(val)} answers equal; means {cal.mean:.3f} / {alone.mean:.3f}")
    assert same >= 0.9 * len(val) and abs(cal.mean - alone.mean) <= 0.1
    assert lik.outcomes and all(o.parsed for o in lik.outcomes if o.prediction["sentiment"])


def test_likelihood_through_a_real_server_agrees_with_in_process(small, llama_server):
    task, splits = small
    local = create_backend(resolve_lm(task, None), cache=False)
    remote_profile = LMProfile(name="server", backend="openai", base_url=llama_server, model="gemma",
                               api="completions", adapter="completion")
    remote = create_backend(remote_profile, cache=False)
    cand = Candidate(task.instruction, tuple(splits.train[:4]), scoring="calibrated")
    a = make_evaluator(task, local.profile, local).evaluate(cand, splits.validation)
    b = make_evaluator(task, remote_profile, remote).evaluate(cand, splits.validation)
    local.close()
    assert remote.usage.calls == len(splits.validation) + 1  # + the content-free calibration call
    same = sum(x.prediction == y.prediction for x, y in zip(a.outcomes, b.outcomes))
    assert same >= 0.9 * len(splits.validation), (same, [o.prediction for o in b.outcomes])


def test_the_balanced_objective_on_the_embedded_model(tmp_path):
    import optuna

    path = small_sst2_task(tmp_path / "task.yaml", sizes=(40, 25, 20), scoring=["likelihood"], selectors=["random"],
                           demo_sets=2, proposers=["offline"], bootstrap_examples=0, prune=False, objective="balanced",
                           crossfit=0)  # trials scored on the validation split alone: its weights are checked below
    run = tmp_path / "run"
    r = run_cli(str(path), "--trials", "3", "--seed", "0", "--out", str(run), "--cache-dir", str(tmp_path / "cache"),
                "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["objective"] == "balanced"
    val = make_splits(load_task(path)).validation
    w = balanced_weights(val)
    study = optuna.load_study(study_name="sst2-seed0", storage=open_storage(f"sqlite:///{run}/study.db"))
    recs = {r["trial"]: r for r in map(json.loads, (run / "trials.jsonl").read_text().splitlines())}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    for t in complete:  # each reported value is the example's accuracy (0 or 1) times its label's weight
        right = {i: v / w[i] for i, v in t.intermediate_values.items()}
        assert sorted(right) == list(range(len(val))) and all(x in (0.0, 1.0) for x in right.values())
        recall = [sum(right[i] for i, e in enumerate(val) if e.output == lab) /
                  sum(e.output == lab for e in val) for lab in ("negative", "positive")]
        assert t.value == pytest.approx(sum(recall) / 2)
        assert recs[t.number]["metric_mean"] == pytest.approx(sum(right.values()) / len(val))
    best = max(complete, key=lambda t: t.value)
    assert summary["best"]["objective_val"] == pytest.approx(best.value, abs=1e-6)
    # the reported validation score is plain accuracy, from the report's own pass over the same split
    assert summary["best"]["val"] == pytest.approx(recs[summary["best"]["trial"]]["metric_mean"], abs=1e-6)


@pytest.fixture(scope="module")
def lever_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lever-run")
    # the settings this run was made under before the defaults moved (2026-12-06), so that seed 0 still
    # picks a kNN winner for the export to carry
    task = small_sst2_task(root / "task.yaml", scoring=["calibrated"], selectors=["knn"], demo_sets=1,
                           proposers=["offline"], bootstrap_examples=0, demo_orders=1, start="seed",
                           objective="mean", crossfit=0)
    run = root / "run"
    r = run_cli(str(task), "--trials", "4", "--seed", "0", "--out", str(run), "--cache-dir", str(root / "cache"),
                "--quiet", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_a_calibrated_knn_winner_exports_as_yaml_and_passes_parity(lever_run, tmp_path):
    summary = json.loads((lever_run / "summary.json").read_text())
    best = summary["best"]
    assert best["scoring"] == "calibrated" and best["knn"] > 0, best  # seed 0 picks a kNN winner
    assert set(best["calibration"]) == {"negative", "positive"}
    report = export_run(lever_run, "yaml", tmp_path / "w.yaml", sample=12)
    assert report.passed, report.failures
    assert report.prompts_equal == 12 and report.agreement >= 0.9
    art = build_artifact(FinishedRun.open(lever_run), "yaml")
    assert art["retrieval"]["k"] == best["knn"] and len(art["demo_pool"]) == 40
    assert art["output_parsing"]["rule"] == "label-likelihood" and art["parameters"]["logprobs"] == 20
    with pytest.raises(ConfigError, match="export it as yaml"):
        build_artifact(FinishedRun.open(lever_run), "completion")


def test_crossfit_on_the_embedded_model_scores_each_training_example_without_itself(tmp_path):
    import optuna

    from optimizer.engine import RunOptions, optimize
    from optimizer.search import space_of

    path = small_sst2_task(tmp_path / "task.yaml", sizes=(20, 12, 10), scoring=["likelihood"], selectors=["knn"],
                           demo_sets=1, proposers=["offline"], bootstrap_examples=0, prune=False, crossfit=8,
                           start="demos", max_demos=3)
    task = load_task(path)
    splits = make_splits(task)
    profile = resolve_lm(task, None)
    backend = create_backend(profile, cache=False)
    try:
        res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend, seed=0, trials=2))
    finally:
        backend.close()
    recs = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert [(r["examples"], r["crossfit_examples"]) for r in recs] == [(20, 8), (20, 8)]
    study = optuna.load_study(study_name="sst2-seed0", storage=open_storage(f"sqlite:///{tmp_path}/run/study.db"))
    knn_trial = next(t for t in study.trials if t.params["n_demos"] > 0)
    cand = space_of(study, splits.train).candidate(0, 0, knn_trial.params["n_demos"], "likelihood")
    assert cand.knn == knn_trial.params["n_demos"] and len(cand.demos) == 20
    from optimizer.data import crossfit_examples

    fitted = crossfit_examples(splits.train, 8, 0, True)
    # each cross-fitted score is the real model's answer to a prompt whose demos leave the example out
    backend = create_backend(profile, cache=False)
    ev = make_evaluator(task, profile, backend)
    try:
        for j, x in enumerate(fitted[:3]):
            assert ev.run_one(cand, x).score == knn_trial.intermediate_values[12 + j]
            assert ev.request(cand, x.inputs, x.id).prompt.count(x.inputs["sentence"]) == 1  # the query only
            assert ev.prompt_text(cand, x.inputs).count(x.inputs["sentence"]) == 2  # without the exclusion: its own demo
    finally:
        backend.close()
    rec = next(r for r in recs if r["trial"] == knn_trial.number)
    assert res.summary["splits"]["validation"] == 12 and 0 <= rec["val_mean"] <= 1
