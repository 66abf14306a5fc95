"""Honest verdicts: the trivial baselines a winner must beat, the promotion rule and the run's verdict.

- The **label prior** (tasks with labels): always answering the most frequent training label; no LM call.
- The **random k-shot** prompt: the seed instruction with k demos drawn once (seeded) from the training
  split, k the winner's demo count (none when the winner has no demos: it would be the seed prompt).
- The **seed prompt** (scored by the test report anyway).

Promotion (after the search): the top 3 complete candidates are re-scored on a confirmation sample that
selection never used, and the one with the best pooled mean of validation and confirmation goes on (the
winner's curse: the best of N validation means is optimistic). Under a ``--search-calls`` cap these calls
count against it (every call before the test report does): the search stops short of the cap by what the
confirmation will take, at most a quarter of the calls left after setup (fewer examples when that is short).
It must beat the label prior on the validation split by a one-sided paired test (p < 0.05); else the best
non-degenerate complete candidate that does; else the best non-degenerate candidate; the seed prompt only
when every candidate has collapsed to one answer.
The verdict (after the test report): ``improved`` only when the winner beats every baseline on the test
split, paired (exact McNemar for 0/1 scores, the paired bootstrap otherwise), Holm-corrected, p < 0.05.
"""

from __future__ import annotations

import random
from typing import Any

import optuna

from ..evaluate import Evaluator, answer_distribution, is_degenerate
from ..examples import Example
from ..metrics import majority_label
from ..program import Candidate
from ..plugins import SELECTORS
from ..search.winner import _rank
from ..selectors import SelectionContext
from ..stats import bootstrap_ci, holm, paired_test
from .context import RunContext
from .heldout import HeldOut, score

ALPHA = 0.05
CONFIRMED = 3  # the search's winner and the next 2 complete candidates


def _sig(p: float) -> float:
    """A p-value to 6 significant digits (a tiny exact p stays readable, never rounds to 0)."""
    return float(f"{p:.6g}")


def prior_label(ctx: RunContext) -> str | None:
    """The most frequent training label (ties: the label set's order), or None for a task without labels."""
    labels = ctx.task.label_set
    return majority_label(labels, ctx.splits.train) if labels else None


def prior_scores(evaluator: Evaluator, label: str, examples: list[Example]) -> list[float]:
    """The metric's score of answering ``label`` on each example (no LM call)."""
    out = evaluator.task.output.name
    return [float(evaluator.metric(ex, {out: label})) for ex in examples]


def random_kshot(ctx: RunContext, seed_prompt: Candidate, best: Candidate) -> Candidate | None:
    """The seed instruction with k training demos drawn at random (one seeded draw), k the winner's demo
    count; None when k is 0 (the seed prompt itself). A program: every step's seed instruction with as many
    demos as the winner's step has, drawn at random from that step's demo pool."""
    if best.steps:
        return _random_program(ctx, best)
    k = min(best.knn or len(best.demos), len(ctx.splits.train))
    if k == 0:
        return None
    demos = tuple(random.Random(f"{ctx.seed}:random_kshot").sample(list(ctx.splits.train), k))
    scoring = best.scoring if best.scoring != "batch" else seed_prompt.scoring
    return Candidate(seed_prompt.instruction, demos,
                     {"instruction": 0, "instruction_origin": seed_prompt.origin.get("instruction_origin"),
                      "demo_selector": "random_kshot", "n_demos": k, "order": 0, "scoring": scoring},
                     scoring=scoring)


def _random_program(ctx: RunContext, best: Candidate) -> Candidate | None:
    space = ctx.space
    rng = random.Random(f"{ctx.seed}:random_kshot")
    steps = []
    for sp, won in zip(space.steps, best.steps):
        pool = list({e.id: e for _, exs in sp.demo_sets for e in exs}.values())
        k = min(won.knn or len(won.demos), len(pool))
        demos = tuple(rng.sample(pool, k)) if k else ()
        steps.append(Candidate(sp.instructions[0][0], demos, {"instruction": 0, "demo_selector": "random_kshot",
                                                               "n_demos": k, "order": 0, "scoring": "generate"}))
    if not any(c.demos for c in steps):
        return None
    return Candidate("", (), {"demo_selector": "random_kshot", "n_demos": sum(len(c.demos) for c in steps),
                              "scoring": "generate"}, steps=tuple(steps))


def _report_val(ctx: RunContext, cand: Candidate) -> float:
    """The task metric's mean on the validation split, as the test report scores it (not the search's
    objective, which may be label-balanced or cross-fitted). Its calls are the report's: they count in the
    ``test`` phase, and the report answers the same candidate from memory."""
    u0 = ctx.backend.usage
    mean = score(ctx.evaluator, cand, ctx.splits.validation).mean
    ctx.count("test", u0)
    return mean


def _beats_prior(ctx: RunContext, cand: Candidate, prior_val: list[float]) -> float:
    """One-sided paired p-value that ``cand`` beats the label prior on the validation split."""
    scores = score(ctx.evaluator, cand, ctx.splits.validation).scores
    return float(paired_test(prior_val, scores, one_sided=True, seed=ctx.seed)["p_value"])


def promote(ctx: RunContext, best_trial: Any, best: Candidate) -> tuple[Any, Candidate, dict[str, Any]]:
    """The promotion rule: the search's winner if it beats the label prior on validation (paired, one-sided,
    p < 0.05), else the best non-degenerate complete candidate that does. When none does, the best
    non-degenerate candidate is kept (the verdict on test then says what it is worth) unless the seed
    prompt (the report's baseline: no demos, generated answers) scores more on validation under
    the task's metric: the search ranks by its objective, and the label-balanced one can put a coin-flip
    prompt above a seed prompt that mostly answers the majority label (BBH navigate, instruct model, seed 1:
    0.500 against the seed prompt's 0.575 on validation, 0.49 against 0.58 on test). The seed prompt's own
    trial when every candidate has collapsed to one answer. (Falling back to the seed prompt whenever nothing
    beats the prior would hand a base model's user a prompt that cannot answer at all: on a small SST-2 run
    the winner missed p < 0.05 at 24 validation examples, p = 0.055, and the seed prompt it would have been
    replaced by scored 0.03 on test; the rule above keeps the winner there.)"""
    label = prior_label(ctx)
    if label is None:
        return best_trial, best, {"rule": "best_val", "chosen_trial": best_trial.number,
                                  "why": "no label set: no label prior to beat"}
    prior_val = prior_scores(ctx.evaluator, label, ctx.splits.validation)
    p = _beats_prior(ctx, best, prior_val)
    if p < ALPHA:
        return best_trial, best, {"rule": "beats_label_prior", "chosen_trial": best_trial.number,
                                  "p": _sig(p), "why": f"trial {best_trial.number} beats always answering "
                                                           f"{label} on validation (p = {p:.3g})"}
    S = optuna.trial.TrialState
    complete = sorted((t for t in ctx.study.get_trials(deepcopy=False) if t.state == S.COMPLETE),
                      key=_rank, reverse=True)
    lost = f"trial {best_trial.number} does not beat always answering {label} " \
           f"on validation (p = {p:.3g})"
    for t in complete:
        if t.number == best_trial.number or t.user_attrs.get("degenerate"):
            continue
        cand = ctx.space.of_trial(t)
        q = _beats_prior(ctx, cand, prior_val)
        if q < ALPHA:
            return t, cand, {"rule": "beats_label_prior", "chosen_trial": t.number, "p": _sig(q),
                             "why": f"{lost}; trial {t.number} is the best non-degenerate one that does "
                                    f"(p = {q:.3g})"}
    kept = next((t for t in complete if not t.user_attrs.get("degenerate")), None)
    if kept is not None:
        cand = best if kept.number == best_trial.number else ctx.space.of_trial(kept)
        nor = f"{lost}, nor does any other non-degenerate candidate"
        baseline = ctx.space.seed_candidate()
        kept_val, seed_val = _report_val(ctx, cand), _report_val(ctx, baseline)
        if seed_val > kept_val and cand.key != baseline.key:
            return None, baseline, {"rule": "seed_better", "chosen_trial": None, "p": _sig(p),
                                    "why": f"{nor}; trial {kept.number}, the best that answers more than one "
                                           f"label, scores {kept_val:.3f} on validation and the seed prompt "
                                           f"{seed_val:.3f}: the seed prompt is kept"}
        return kept, cand, {"rule": "best_non_degenerate", "chosen_trial": kept.number, "p": _sig(p),
                            "why": f"{nor}: trial {kept.number}, the best that answers more than one label, "
                                   f"is kept"}
    # the seed prompt's own trial (instruction 0, no demos; with ``start: demos`` it is not slot 0)
    seeds = [t for t in complete if t.params.get("instruction") == 0 and t.params.get("n_demos", 0) == 0]
    seed_trial = max(seeds, key=_rank) if seeds else None
    seed = ctx.space.of_trial(seed_trial) if seed_trial is not None else ctx.space.seed_candidate()
    return seed_trial, seed, {"rule": "seed_fallback",
                              "chosen_trial": seed_trial.number if seed_trial is not None else None,
                              "why": f"{lost}, and every candidate answers one label on 90% or more of "
                                     f"validation: the seed prompt is kept"}


def baseline_names(label: str | None, k: int | None) -> dict[str, str]:
    return {"seed": "the seed prompt", "label_prior": f"always answering {label}",
            "random_kshot": f"the seed instruction with {k} random demos"}


def verdict(best_test: list[float], baselines: dict[str, list[float]], names: dict[str, str],
            seed: int = 0) -> dict[str, Any]:
    """``improved`` when the winner beats every baseline on test (paired, two-sided, Holm-corrected,
    p < 0.05, and a higher mean); else ``no_gain`` against the strongest baseline it does not beat (the
    highest test mean; ties: the highest corrected p), so that a winner under the label prior is said to
    be, even when a weaker baseline is closer to it."""
    keys = list(baselines)
    raw = [paired_test(baselines[k], best_test, seed=seed) for k in keys]
    adj = holm([float(r["p_value"]) for r in raw])
    mean_best = sum(best_test) / len(best_test) if best_test else float("nan")
    tests = {}
    for k, r, a in zip(keys, raw, adj):
        m = sum(baselines[k]) / len(baselines[k]) if baselines[k] else float("nan")
        tests[k] = {"test": r["test"], "winner": round(mean_best, 6), "baseline": round(m, 6),
                    "diff": round(float(r["diff"]), 6), "p": _sig(float(r["p_value"])), "p_holm": _sig(a),
                    "beaten": bool(a < ALPHA and float(r["diff"]) > 0)}
    lost = [k for k in keys if not tests[k]["beaten"]]
    worst = (max(lost, key=lambda k: (tests[k]["baseline"], tests[k]["p_holm"])) if lost
             else max(keys, key=lambda k: (tests[k]["p_holm"], -tests[k]["diff"])))
    t = tests[worst]
    if lost:
        relation = "worse than" if t["diff"] < 0 and t["p_holm"] < ALPHA else "no better than"
        words = (f"{relation} {names[worst]} ({t['winner']:.3f} vs {t['baseline']:.3f} on test, "
                 f"p = {t['p_holm']:.3g})")
    else:
        named = [names[k] for k in keys]
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        words = (f"improved: beats {listed} on test "
                 f"(largest Holm p = {t['p_holm']:.3g})")
    return {"status": "no_gain" if lost else "improved", "against": worst, "p": t["p_holm"],
            "words": words, "alpha": ALPHA, "tests": tests}


def degenerate_words(dist: dict[str, int]) -> str:
    top, n = next(iter(dist.items()))
    return f"the winner answers {top!r} on {n} of {sum(dist.values())} test examples"


def answer_fields(evaluator: Evaluator, held: HeldOut) -> dict[str, Any]:
    """The winner's parsed test answers: their counts, whether one of them covers 90% or more, and how many
    answers could not be parsed (each scored wrong)."""
    outcomes = held.best_test.outcomes
    answers = [evaluator.answer(o) for o in outcomes]
    failures = sum(1 for o in outcomes if not o.parsed)
    return {"answer_distribution": answer_distribution(answers), "degenerate": is_degenerate(answers),
            "parse_failures": failures, "parse_failure_rate": round(failures / len(outcomes), 6) if outcomes else 0.0}


def _entry(val: float | None, test: list[float], seed: int) -> dict[str, Any]:
    ci = bootstrap_ci(test, seed=seed)
    return {"val": round(val, 6) if val is not None else None, "test": round(ci.mean, 6),
            "test_ci": [round(ci.low, 6), round(ci.high, 6)]}


def honest_fields(ctx: RunContext, held: HeldOut, best: Candidate, answers: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``baselines`` (each with val, test, test_ci; random_kshot is scored on test only, its
    val None) and ``verdict``."""
    ev, splits, seed = ctx.evaluator, ctx.splits, ctx.seed
    label = prior_label(ctx)
    k = sum(c.knn or len(c.demos) for c in best.steps) if best.steps else best.knn or len(best.demos)
    baselines: dict[str, Any] = {"seed": _entry(held.base_val.mean, held.base_test.scores, seed),
                                 "label_prior": None, "random_kshot": None}
    tests = {"seed": held.base_test.scores}
    if label is not None:
        pv, pt = prior_scores(ev, label, splits.validation), prior_scores(ev, label, splits.test)
        baselines["label_prior"] = {"label": label, **_entry(sum(pv) / len(pv) if pv else None, pt, seed)}
        tests["label_prior"] = pt
    if held.kshot_test is not None:
        kc = held.kshot_test.candidate
        baselines["random_kshot"] = {"k": k, "demo_ids": [d.id for c in (kc.steps or (kc,)) for d in c.demos],
                                     **_entry(None, held.kshot_test.scores, seed)}
        tests["random_kshot"] = held.kshot_test.scores
    v = verdict(held.best_test.scores, tests, baseline_names(label, k), seed)
    if answers["degenerate"]:
        v["words"] += "; " + degenerate_words(answers["answer_distribution"])
    return {"baselines": baselines, "verdict": v}


def confirmation_sample(ctx: RunContext) -> list[Example]:
    """Training examples selection never used, as many as the validation split has: outside every demo set,
    outside what trials were scored on (cross-fitting) and outside what a selector ran the LM on (the
    bootstrap teacher's examples). A kNN candidate answers each without itself among the demos."""
    used = {e.id for _, exs in ctx.space.demo_sets for e in exs} | {e.id for e in ctx.selection}
    if ctx.task.optimizer.max_demos:
        sctx = SelectionContext(ctx.splits.train, ctx.seed, labels=ctx.task.label_set,
                                budget=ctx.task.optimizer.bootstrap_examples)
        for name in dict.fromkeys(ctx.task.optimizer.selectors):
            used |= SELECTORS.get(name).scored_examples(sctx, ctx.task.optimizer.max_demos)
    return [e for e in ctx.splits.train if e.id not in used][:len(ctx.splits.validation)]


def confirmation_size(cap: int | None, setup_calls: int, available: int, per: int = 1) -> int:
    """Examples the confirmation re-scores the top candidates on: the ``available`` unused training examples,
    or under a ``--search-calls`` ``cap`` as many as a quarter of the calls left after ``setup_calls`` pays
    for (``per``: calls per answer, one per step of a program)."""
    if cap is None:
        return available
    room = max(0, cap - setup_calls) // 4
    return max(0, min(available, (room - CONFIRMED) // (CONFIRMED * per)))


def confirmation_calls(size: int, per: int = 1) -> int:
    """An upper bound on the confirmation's LM calls at ``size`` examples (a calibrated readout's one
    content-free call per candidate included): what a capped search leaves for it."""
    return CONFIRMED * (size * per + 1) if size else 0


def calls_per_answer(task: Any) -> int:
    return len(task.steps or [None])  # a program of steps answers with one call per step


def _confirm_row(ctx: RunContext, t: Any, cand: Candidate, sample: list[Example]) -> dict[str, Any]:
    ci = bootstrap_ci(score(ctx.evaluator, cand, sample).scores, seed=ctx.seed)
    val, n_val = float(t.user_attrs.get("val_mean", t.value)), len(ctx.splits.validation)
    pooled = (val * n_val + ci.mean * len(sample)) / (n_val + len(sample))
    return {"trial": t.number, "val": round(val, 6), "confirmation": round(ci.mean, 6),
            "confirmation_ci": [round(ci.low, 6), round(ci.high, 6)], "pooled": round(pooled, 6), "winner": False}


def confirm(ctx: RunContext, best_trial: Any, best: Candidate) -> tuple[Any, Candidate, dict[str, Any]]:
    """The winner's curse: after N trials the best validation mean is optimistic. The search's winner and
    the next 2 complete candidates (the search's ranking) are re-scored on the confirmation sample, and the one with the best
    pooled mean of validation and confirmation (weighted by their sizes; ties go to the search's order) goes
    on to the promotion rule. Without a sample the search's winner goes on."""
    unused = confirmation_sample(ctx) if best_trial is not None else []
    sample = unused[:confirmation_size(ctx.opts.search_calls, int(ctx.setup.get("setup_calls", 0)), len(unused),
                                       calls_per_answer(ctx.task))]
    if not sample:
        why = ("the --search-calls cap leaves no calls to confirm with" if unused else
               "every training example is in a demo set or was seen by selection")
        return best_trial, best, {"examples": 0, "candidates": [], "rule": "best_val", "why": why}
    S = optuna.trial.TrialState
    ranked = sorted((t for t in ctx.study.get_trials(deepcopy=False) if t.state == S.COMPLETE),
                    key=_rank, reverse=True)
    top = [best_trial] + [t for t in ranked if t.number != best_trial.number][:CONFIRMED - 1]  # the winner first
    u0 = ctx.backend.usage
    cands = {t.number: best if t.number == best_trial.number else ctx.space.of_trial(t) for t in top}
    rows = [_confirm_row(ctx, t, cands[t.number], sample) for t in top]
    ctx.count("confirmation", u0)
    pick = max(range(len(rows)), key=lambda i: (rows[i]["pooled"], -i))
    chosen = top[pick]
    why = ("the search's winner has the best pooled mean of validation and confirmation"
           if chosen.number == best_trial.number else
           f"trial {chosen.number} has the best pooled mean of validation and confirmation "
           f"({rows[pick]['pooled']:.3f}; the search's winner, trial {best_trial.number}: {rows[0]['pooled']:.3f})")
    return chosen, cands[chosen.number], {"examples": len(sample), "candidates": rows,
                                          "rule": "val_plus_confirmation", "chosen_trial": chosen.number,
                                          "why": why}


def mark_winner(ctx: RunContext, report: dict[str, Any], trial: Any, cand: Candidate) -> dict[str, Any]:
    """The promoted winner flagged among the confirmed candidates; when the promotion rule moved to a trial
    outside them, it is re-scored on the same sample and listed too (not under a ``--search-calls`` cap,
    which kept calls for the confirmed candidates only)."""
    rows = report["candidates"]
    if (trial is not None and report["examples"] and trial.number not in {r["trial"] for r in rows}
            and ctx.opts.search_calls is None):
        u0 = ctx.backend.usage
        rows.append(_confirm_row(ctx, trial, cand, confirmation_sample(ctx)[:report["examples"]]))
        ctx.count("confirmation", u0)
    for r in rows:
        r["winner"] = trial is not None and r["trial"] == trial.number
    return report
