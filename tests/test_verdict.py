"""Honest verdicts (issue 25): trivial baselines, the paired verdict, collapse made visible, promotion.

Scripted backends only (no real LM): one that answers one label everywhere, one that is truly better
with an instruction the search proposes, and the known tables the verdict's p-values are checked on."""

from __future__ import annotations

import hashlib
import json

import pytest
from scipy.stats import binomtest

from fakes import ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.evaluate import answer_distribution, is_degenerate
from optimizer.lm.base import LMRequest, LMResponse
from optimizer.run.verdict import baseline_names, verdict
from optimizer.stats import holm, mcnemar, mcnemar_greater, paired_bootstrap, paired_test


class ConstantBackend(ScriptedBackend):
    """Answers one label on every input, whatever the prompt."""

    def _generate(self, request: LMRequest) -> LMResponse:
        return LMResponse(text=" positive\n", prompt_tokens=10, completion_tokens=1)


class InstructedBackend(ScriptedBackend):
    """Truly better with one proposed instruction: a prompt that says "Answer with one word" is answered
    right; any other prompt only on the inputs whose hash mod 10 is below 3 (demos do not help)."""

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt if request.prompt is not None else request.messages[-1][1]
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        gold = self.answers.get(last)
        right = gold is not None and ("Answer with one word" in prompt
                                      or int(hashlib.sha1(last.encode()).hexdigest(), 16) % 10 < 3)
        return LMResponse(text=f" {gold}\n" if right else f" {self.wrong}\n", prompt_tokens=10, completion_tokens=1)


class ReadoutsAtChanceBackend(ScriptedBackend):
    """Generated answers are right on the inputs whose hash mod 10 is below 8; label readouts (logprobs) only
    below 5, whatever the prompt: a search over label readouts alone finds nothing as good as the seed prompt."""

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt if request.prompt is not None else request.messages[-1][1]
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        gold = self.answers.get(last)
        h = int(hashlib.sha1(last.encode()).hexdigest(), 16) % 10
        answer = gold if gold is not None and h < (5 if request.logprobs else 8) else None
        answer = answer or next(lab for lab in self.labels if lab != gold)
        lp = [{f" {lab}": 0.0 if lab == answer else -5.0 for lab in self.labels}] if request.logprobs else None
        return LMResponse(text=f" {answer}\n", prompt_tokens=10, completion_tokens=1, logprobs=lp)


def test_the_seed_prompt_is_kept_when_nothing_beats_the_label_prior_and_it_scores_more(tmp_path):
    """The search reads labels only (``scoring: [likelihood]``), at chance; the seed prompt's generated answers
    are better on validation, though no candidate beats always answering one label: the seed prompt is kept."""
    from conftest import sst2_task

    task = sst2_task(train=40, validation=24, test=40, trials=6, bootstrap_examples=12, scoring=["likelihood"])
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ReadoutsAtChanceBackend(answers), seed=3))
    summary = json.loads((res.run_dir / "summary.json").read_text())
    promo, best, base = summary["promotion"], summary["best"], summary["baseline"]
    assert promo["rule"] == "seed_better" and promo["chosen_trial"] is None, promo
    assert best["instruction_origin"] == "seed" and best["n_demos"] == 0 and best["scoring"] == "generate"
    assert best["val"] == base["val"] > 0.6 and best["test"] == base["test"]
    assert f"{base['val']:.3f}" in promo["why"]
    assert summary["verdict"]["status"] == "no_gain"
    phases = summary["phases"]  # the seed prompt's validation calls, made by the promotion, are the report's
    assert phases["test"]["calls"] >= len(s.validation) + len(s.test)
    assert summary["lm_calls"] == sum(p["calls"] for p in phases.values())


def _run(tmp_path, backend_cls, **sizes):
    from conftest import sst2_task

    task = sst2_task(train=sizes.get("train", 40), validation=sizes.get("validation", 40),
                     test=sizes.get("test", 60), trials=8, bootstrap_examples=12)
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=backend_cls(answers), seed=3))
    trials = [json.loads(line) for line in (res.run_dir / "trials.jsonl").read_text().splitlines()]
    return json.loads((res.run_dir / "summary.json").read_text()), trials


def test_one_label_everywhere_is_degenerate_and_not_improved(tmp_path):
    s, trials = _run(tmp_path, ConstantBackend)
    assert s["best"]["degenerate"] is True
    assert s["best"]["answer_distribution"] == {"positive": s["splits"]["test"]}
    assert all(r.get("degenerate") is True for r in trials if r["state"] == "complete")
    assert s["baselines"]["label_prior"]["label"] == "positive"
    assert s["baselines"]["label_prior"]["test"] == s["best"]["test"]  # a constant classifier: the prior exactly
    assert s["verdict"]["status"] == "no_gain"
    assert "no better than" in s["verdict"]["words"] and "'positive'" in s["verdict"]["words"]
    assert s["promotion"]["rule"] == "seed_fallback"  # nothing beats the prior on validation: the seed is kept
    assert s["best"]["instruction_origin"] == "seed" and s["best"]["n_demos"] == 0
    assert s["baselines"]["random_kshot"] is None  # the kept winner has no demos: k = 0
    assert set(s["verdict"]["tests"]) == {"seed", "label_prior"}


def test_truly_better_prompt_is_improved(tmp_path):
    s, trials = _run(tmp_path, InstructedBackend)
    assert "Answer with one word" in s["best"]["instruction"]
    assert s["promotion"]["rule"] == "beats_label_prior" and s["promotion"]["chosen_trial"] == s["best"]["trial"]
    assert s["best"]["degenerate"] is False
    assert s["verdict"]["status"] == "improved", s["verdict"]
    assert all(t["beaten"] for t in s["verdict"]["tests"].values())
    b = s["baselines"]
    assert b["seed"]["test"] == s["baseline"]["test"]
    # the winner's curse: its optimism, and the top candidates on a confirmation sample selection never used
    assert s["best"]["optimism"] == pytest.approx(s["best"]["val"] - s["best"]["test"], abs=1e-5)
    conf = s["confirmation"]
    assert conf["examples"] > 0 and 1 <= len(conf["candidates"]) <= 4
    assert [c["trial"] for c in conf["candidates"] if c["winner"]] == [s["best"]["trial"]]
    win = next(c for c in conf["candidates"] if c["winner"])
    assert win["confirmation"] > 0.9  # truly better: it stays better on fresh training examples
    assert s["phases"]["confirmation"]["calls"] <= conf["examples"] * len(conf["candidates"])
    for name in ("seed", "label_prior"):
        assert b[name]["val"] is not None and len(b[name]["test_ci"]) == 2
    if s["best"]["n_demos"]:
        assert b["random_kshot"]["k"] == s["best"]["n_demos"] and b["random_kshot"]["val"] is None
        assert len(b["random_kshot"]["demo_ids"]) == s["best"]["n_demos"]


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[float], list[float]]:
    a = [1.0] * both + [1.0] * a_only + [0.0] * b_only + [0.0] * neither
    b = [1.0] * both + [0.0] * a_only + [1.0] * b_only + [0.0] * neither
    return a, b


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]


def test_verdict_p_values_match_stats_on_known_tables():
    seed, best = _pairs(10, 2, 14, 14)  # seed right only on 2 examples, the winner only on 14
    v = verdict(best, {"seed": seed}, baseline_names("positive", 4))
    t = v["tests"]["seed"]
    assert t["test"] == "mcnemar"
    assert t["p"] == pytest.approx(mcnemar(seed, best)["p_value"], rel=1e-5)
    assert t["p"] == pytest.approx(binomtest(2, 16, 0.5).pvalue, rel=1e-5)
    # three baselines against one winner: Holm over their exact McNemar p-values, checked by hand
    winner = [1.0] * 30 + [0.0] * 10
    base = {"seed": [1.0] * 20 + [0.0] * 20,                          # winner-only 10, seed-only 0
            "label_prior": [1.0] * 26 + [0.0] * 4 + [1.0] * 2 + [0.0] * 8,  # winner-only 4, prior-only 2
            "random_kshot": [1.0] * 24 + [0.0] * 6 + [0.0] * 10}      # winner-only 6, kshot-only 0
    v = verdict(winner, base, baseline_names("positive", 4))
    raw = {"seed": binomtest(0, 10, 0.5).pvalue, "label_prior": binomtest(2, 6, 0.5).pvalue,
           "random_kshot": binomtest(0, 6, 0.5).pvalue}
    for k, p in raw.items():
        assert v["tests"][k]["p"] == pytest.approx(p, rel=1e-5)
        assert v["tests"][k]["p"] == pytest.approx(mcnemar(base[k], winner)["p_value"], rel=1e-5)
    # by hand: sorted 0.001953 (x3), 0.03125 (x2), 0.6875 (x1)
    assert v["tests"]["seed"]["p_holm"] == pytest.approx(3 * raw["seed"], rel=1e-5)
    assert v["tests"]["random_kshot"]["p_holm"] == pytest.approx(2 * raw["random_kshot"], rel=1e-5)
    assert v["tests"]["label_prior"]["p_holm"] == pytest.approx(raw["label_prior"], rel=1e-5)
    assert v["status"] == "no_gain" and v["against"] == "label_prior"
    assert v["words"].startswith("no better than always answering positive")
    assert v["p"] == v["tests"]["label_prior"]["p_holm"]
    # without the close baseline: both beaten after Holm (0.0039, 0.03125) -> improved
    v2 = verdict(winner, {k: base[k] for k in ("seed", "random_kshot")}, baseline_names("positive", 4))
    assert v2["status"] == "improved" and v2["words"].startswith("improved")
    # a winner significantly below a baseline is said to be worse, not merely no better
    v3 = verdict(base["seed"], {"random_kshot": winner}, baseline_names("positive", 4))
    assert v3["status"] == "no_gain" and v3["tests"]["random_kshot"]["p_holm"] < 0.05
    assert v3["words"].startswith("worse than the seed instruction with 4 random demos (0.500 vs 0.750")
    # not improved: the strongest baseline not beaten is named, not the closest one (a winner at 0.46 next to
    # a 0.42 random k-shot prompt is still under a 0.58 label prior; BBH navigate, seed 0)
    win = [1.0] * 46 + [0.0] * 54
    close = [1.0] * 40 + [0.0] * 6 + [1.0] * 2 + [0.0] * 52  # winner-only 6, kshot-only 2
    prior = [1.0] * 30 + [0.0] * 16 + [1.0] * 28 + [0.0] * 26  # winner-only 16, prior-only 28
    v4 = verdict(win, {"label_prior": prior, "random_kshot": close}, baseline_names("No", 6))
    assert v4["tests"]["random_kshot"]["p_holm"] > v4["tests"]["label_prior"]["p_holm"]
    assert v4["status"] == "no_gain" and v4["against"] == "label_prior"
    assert v4["words"].startswith("no better than always answering No (0.460 vs 0.580 on test")


def test_paired_test_one_sided_and_bootstrap():
    a, b = _pairs(10, 1, 7, 2)
    assert paired_test(a, b, one_sided=True)["p_value"] == pytest.approx(binomtest(7, 8, 0.5, alternative="greater").pvalue)
    assert mcnemar_greater(a, b) == pytest.approx(binomtest(7, 8, 0.5, alternative="greater").pvalue)
    assert mcnemar_greater(b, a) > 0.9  # the other direction is not a gain
    x, y = [0.2, 0.5, 0.1, 0.9, 0.4, 0.3], [0.6, 0.5, 0.4, 0.9, 0.8, 0.7]
    t = paired_test(x, y, seed=1)
    assert t["test"] == "paired_bootstrap"
    assert t["p_value"] == paired_bootstrap(x, y, seed=1)["p_value"]
    assert paired_test(x, x, one_sided=True)["p_value"] == 1.0


def test_answer_distribution_and_degenerate():
    assert answer_distribution(["a", "b", "a", ""]) == {"a": 2, "": 1, "b": 1}
    assert is_degenerate(["yes"] * 9 + ["no"])
    assert not is_degenerate(["yes"] * 8 + ["no"] * 2)
    assert not is_degenerate([""] * 10)  # no answer is not a collapse onto one answer
    assert not is_degenerate([])


def test_table_and_report_say_the_verdict_in_words(tmp_path):
    from rich.console import Console

    from optimizer.progress import summary_table
    from optimizer.report import build_report

    s, _ = _run(tmp_path, ConstantBackend)
    console = Console(record=True, width=200)
    console.print(summary_table(s))
    text = console.export_text()
    assert "verdict: no better than" in text and "always 'positive'" in text
    html = build_report(tmp_path / "run", tmp_path / "report.html").read_text()
    assert 'id="verdict"' in html and "no better than" in html and 'id="promotion"' in html
    assert "always &#x27;positive&#x27;" in html or "always 'positive'" in html


def test_bench_shows_the_label_prior_as_a_row(tmp_path):
    import yaml

    from conftest import sst2_task
    from optimizer.bench import BenchOptions, run_bench
    from optimizer.bench._table import to_markdown

    task = sst2_task()
    s = make_splits(task)
    backend = ScriptedBackend({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"candidates": [{"name": "bare", "instruction": "Label it."}]}))
    res = run_bench(task, [str(tmp_path / "c.yaml")],
                    BenchOptions(limit=10, out=tmp_path / "bench", backend=backend, timing_calls=0))
    prior = res.doc["label_prior"]
    examples = s.test[:10]
    assert prior["label"] == max(("negative", "positive"), key=lambda lab: sum(e.output == lab for e in s.train))
    assert prior["mean"] == pytest.approx(sum(e.output == prior["label"] for e in examples) / 10)
    ref = [res.doc["candidates"][0]["per_example"][e.id] for e in examples]
    mine = [float(e.output == prior["label"]) for e in examples]
    assert prior["vs_reference"]["p_value"] == pytest.approx(mcnemar(ref, mine)["p_value"])
    assert f"label prior (always '{prior['label']}')" in to_markdown(res.doc)


def _copy_study(study, dist, attrs_of=lambda t: {}):
    import optuna

    out = optuna.create_study(direction="maximize")
    for t in study.trials:
        out.add_trial(optuna.trial.create_trial(params=t.params, distributions=dist, value=t.value,
                                                user_attrs={**t.user_attrs, **attrs_of(t)}))
    return out


def test_promotion_takes_the_best_non_degenerate_trial_that_beats_the_label_prior(monkeypatch):
    """The search's best trial does not beat the label prior on validation and the next one is degenerate:
    the run promotes the next non-degenerate trial that does, and says why."""
    import types

    import optuna

    from optimizer.program import Candidate
    from optimizer.run import verdict as v

    dist = {"instruction": optuna.distributions.IntDistribution(0, 3),
            "n_demos": optuna.distributions.IntDistribution(0, 4)}
    study = optuna.create_study(direction="maximize")
    for value, instruction, attrs in [(0.9, 1, {}), (0.85, 2, {"degenerate": True}), (0.8, 3, {}), (0.5, 0, {})]:
        study.add_trial(optuna.trial.create_trial(params={"instruction": instruction, "n_demos": 2 if instruction else 0},
                                                  distributions=dist, value=value, user_attrs=attrs))
    candidates = {t.number: Candidate(f"instruction {t.params['instruction']}") for t in study.trials}
    p_of = {"instruction 1": 0.2, "instruction 2": 0.001, "instruction 3": 0.01, "instruction 0": 0.5}
    seed_prompt = Candidate("instruction 0", scoring="generate")
    ctx = types.SimpleNamespace(study=study, seed=0, evaluator=None, splits=types.SimpleNamespace(validation=[]),
                                space=types.SimpleNamespace(of_trial=lambda t: candidates[t.number],
                                                            seed_candidate=lambda: seed_prompt))
    monkeypatch.setattr(v, "prior_label", lambda ctx: "No")
    monkeypatch.setattr(v, "prior_scores", lambda ev, label, examples: [1.0, 0.0])
    monkeypatch.setattr(v, "_beats_prior", lambda ctx, cand, prior: p_of[cand.instruction])
    best = study.trials[0]
    trial, cand, why = v.promote(ctx, best, candidates[0])
    assert trial.number == 2 and cand.instruction == "instruction 3"  # trial 1 is degenerate, though it beats
    assert why["rule"] == "beats_label_prior" and why["chosen_trial"] == 2 and why["p"] == 0.01
    assert "trial 0" in why["why"] and "does not beat always answering No" in why["why"]
    p_of["instruction 3"] = 0.3  # none beats it: the best non-degenerate candidate is kept, unless the seed
    val_of = {id(candidates[0]): 0.6}  # prompt (no demos, generated answers) scores more on validation
    monkeypatch.setattr(v, "_report_val", lambda ctx, cand: val_of[id(cand)])
    for seed_val in (0.55, 0.6):  # less, or a tie: the search's candidate stays
        val_of[id(seed_prompt)] = seed_val
        trial, cand, why = v.promote(ctx, best, candidates[0])
        assert why["rule"] == "best_non_degenerate" and trial.number == 0 and cand is candidates[0]
    val_of[id(seed_prompt)] = 0.65  # more, under the task's metric: the seed prompt is kept
    trial, cand, why = v.promote(ctx, best, candidates[0])
    assert why["rule"] == "seed_better" and trial is None and cand is seed_prompt
    assert "0.600" in why["why"] and "0.650" in why["why"]
    collapsed = _copy_study(study, dist, lambda t: {"degenerate": True})  # every candidate collapsed: the seed
    ctx.study = collapsed  # prompt's own trial (instruction 0, no demos)
    trial, cand, why = v.promote(ctx, collapsed.trials[0], candidates[0])
    assert why["rule"] == "seed_fallback" and trial.number == 3 and cand.instruction == "instruction 0"


class FlukeBackend(ScriptedBackend):
    """The winner's curse, scripted: a prompt whose instruction says "Answer with one word" is answered right
    on the validation split and wrong everywhere else (a fluke of the split); every other prompt is right on
    the inputs whose hash mod 10 is below 7, on every split alike. Generated text and label logprobs agree."""

    validation: set[str] = set()

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt if request.prompt is not None else request.messages[-1][1]
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        gold = self.answers.get(last)
        if "Answer with one word" in prompt:
            right = last in self.validation
        else:
            right = int(hashlib.sha1(last.encode()).hexdigest(), 16) % 10 < 7
        answer = gold if right and gold is not None else self.wrong
        lp = [{f" {lab}": (0.0 if lab == answer else -3.0) for lab in self.labels}] if request.logprobs else None
        return LMResponse(text=f" {answer}\n", prompt_tokens=10, completion_tokens=1, logprobs=lp)


def test_a_validation_fluke_loses_the_promotion_to_a_candidate_the_confirmation_sample_backs(tmp_path):
    from conftest import sst2_task

    task = sst2_task(train=120, validation=40, test=60, trials=8, bootstrap_examples=12, prune=False)
    s = make_splits(task)
    FlukeBackend.validation = {e.inputs["sentence"] for e in s.validation}
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=FlukeBackend(answers), seed=3))
    summary = json.loads((res.run_dir / "summary.json").read_text())
    trials = [json.loads(line) for line in (res.run_dir / "trials.jsonl").read_text().splitlines()]
    conf = summary["confirmation"]
    fluke = conf["candidates"][0]  # the search's winner comes first
    # the precondition: the fluke won the search, and off the validation split it answers "negative" everywhere
    assert fluke["val"] == 1.0 and fluke["confirmation"] < 0.6
    assert conf["rule"] == "val_plus_confirmation" and conf["chosen_trial"] != fluke["trial"]
    chosen = next(c for c in conf["candidates"] if c["trial"] == conf["chosen_trial"])
    assert chosen["pooled"] > fluke["pooled"] and chosen["winner"]
    assert summary["best"]["trial"] == conf["chosen_trial"] and summary["promotion"]["rule"] == "beats_label_prior"
    assert summary["best"]["test"] > 0.55  # the fluke answers "negative" on every test example
    assert any(t["trial"] == fluke["trial"] for t in trials)
    assert 0 < conf["examples"] <= len(s.validation)
