"""Phase 5, the summary: one builder for a finished run (the test report) and a stopped one (a budget was
reached: the best so far, validation scores only), and the files of the run directory that carry it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from .. import __version__
from ..program import Candidate
from ..scoring import offsets_to_json
from ..search import ATTR, pick_best, redact_url, trial_slot
from ..stats import Interval
from .context import RunContext
from .heldout import HeldOut
from .options import RunResult
from .verdict import answer_fields, honest_fields


@dataclass
class Outcome:
    """What the run ends with: the seed prompt, the winner and their trials; the test report of a finished
    run (``held``), or why a stopped one stopped (``stopped``)."""
    baseline: Candidate
    best: Candidate
    best_trial: Any  # optuna FrozenTrial, or None when a stopped run has no complete trial
    base_trial: Any = None  # a stopped run's seed trial (slot 0), if complete
    held: HeldOut | None = None
    stopped: str | None = None
    promotion: dict[str, Any] | None = None  # how the winner was promoted (``verdict.promote``)
    confirmation: dict[str, Any] | None = None  # the top candidates on a fresh sample (``verdict.confirm``)


def best_so_far(ctx: RunContext, reason: str) -> Outcome:
    """A budget was reached: the best complete trial so far (the seed prompt when there is none)."""
    S = optuna.trial.TrialState
    study, space, task = ctx.study, ctx.space, ctx.task
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == S.COMPLETE] if study is not None else []
    if space is not None:
        baseline = space.seed_candidate()
    else:
        baseline = Candidate(task.instruction.strip(), (), {"instruction": 0, "instruction_origin": "seed"})
    best, best_trial = baseline, None
    if complete and space is not None:
        best_trial = pick_best(complete, task.optimizer.pick)
        best = space.of_trial(best_trial)
    base_trial = next((t for t in complete if trial_slot(t) == 0), None)
    return Outcome(baseline, best, best_trial, base_trial, stopped=reason)


def write_result(ctx: RunContext, o: Outcome) -> RunResult:
    """Write the winner, the prompts, the test predictions (finished runs), summary.json and status.json."""
    run, evaluator = ctx.run, ctx.evaluator
    if o.stopped is not None and ctx.search is not None:
        run.write_trials(ctx.search.records())
    summary = summarize(ctx, o)
    run.write_winner(ctx.task, o.best)
    run.write_text("prompt.txt", summary["prompt"] + "\n")
    run.write_text("baseline_prompt.txt", evaluator.prompt_text(o.baseline) + "\n")
    if o.held is not None:
        run.write_predictions("test_predictions.jsonl", ctx.splits.test, o.held.base_test, o.held.best_test)
    run.write_json("summary.json", summary)
    if o.stopped is None:
        run.write_json("status.json", {"status": "finished", "wall_seconds": summary["wall_seconds"]})
        ctx.emit("done", summary=summary)
        return RunResult(run.path, summary, o.baseline, o.best)
    run.write_json("status.json", {"status": "stopped", "reason": o.stopped, "wall_seconds": summary["wall_seconds"]})
    ctx.emit("stopped", reason=o.stopped, summary=summary)
    return RunResult(run.path, summary, o.baseline, o.best, {"stopped": o.stopped})


def summarize(ctx: RunContext, o: Outcome) -> dict[str, Any]:
    """summary.json: the same keys, in the same order, for every run; a stopped run says why and has no test
    report (its ``val`` are the trials' objectives, its ``test`` None)."""
    task, evaluator, splits, held = ctx.task, ctx.evaluator, ctx.splits, o.held
    usage = ctx.usage().to_dict()
    s: dict[str, Any] = {
        "task": task.task, "task_version": task.version, "optimizer_version": __version__, "seed": ctx.seed,
        "lm": ctx.profile.public_dict(), "adapter": evaluator.adapter_kind, "program": "steps" if task.steps else task.program,
        "metric": evaluator.metric.name, "splits": splits.sizes(), "leakage_removed": splits.leakage,
    }
    if o.stopped is not None:
        s["stopped"] = o.stopped
    s["trials"] = trial_counts(ctx.study, ctx.n_trials)
    if held is None:
        s["baseline"] = describe(ctx, o.baseline, _value(o.base_trial), None, trial_fields(o.base_trial))
        s["best"] = describe(ctx, o.best, _value(o.best_trial), None, trial_fields(o.best_trial))
        s["best"].update(answer_distribution=None, degenerate=None, parse_failures=None, parse_failure_rate=None)
        s["best"].update(optimism=None)
        s.update(improvement=None, significant=False, promotion=None, baselines=None, verdict=None,
                 confirmation=None)
    else:
        base_ci, best_ci, diff = held.intervals(ctx.seed)
        s["baseline"] = describe(ctx, o.baseline, held.base_val.mean, base_ci, {})
        s["best"] = describe(ctx, o.best, held.best_val.mean, best_ci, trial_fields(o.best_trial, objective=True))
        answers = answer_fields(ctx.evaluator, held)
        s["best"].update(answers)
        s.update(_search_fields(ctx, diff, significant=(not best_ci.overlaps(base_ci)) and best_ci.mean > base_ci.mean))
        s["promotion"] = o.promotion
        s["best"]["optimism"] = round(held.best_val.mean - best_ci.mean, 6)  # the winner's curse: val - test
        s.update(honest_fields(ctx, held, o.best, answers))
        s["confirmation"] = o.confirmation
    s.update(usage_fields(usage, ctx.phases, ctx.proposer_backend is ctx.backend))
    if ctx.judge_backend is not None:  # the judge metric's calls, apart from the task's and the proposer's
        s["judge"] = {"lm": ctx.task.metric.lm, **ctx.judge_backend.usage.to_dict()}
    if held is not None:
        s["failed_calls"] = sum(r.get("failed_calls", 0) for r in ctx.search.records())
    s.update(concurrency=ctx.backend.max_concurrency, spent=ctx.budget.to_dict())
    if held is not None:
        s["study"] = _study_fields(ctx)
    s.update(resumed=ctx.run.resumed, wall_seconds=ctx.wall_seconds(), prompt=evaluator.prompt_text(o.best))
    return s


def describe(ctx: RunContext, c: Candidate, val: float | None, test_ci: Interval | None,
             extra: dict[str, Any]) -> dict[str, Any]:
    """One prompt of the summary: what it is, its validation score and (finished runs) its test interval."""
    evaluator = ctx.evaluator
    steps = {"steps": [{"name": n, **_prompt_fields(sc), "demo_order": sc.origin.get("order", 0), "knn": sc.knn} for n, sc in zip(evaluator.names, c.steps)]
             } if c.steps else {}
    return {**_prompt_fields(c), **steps, **scoring_fields(evaluator, c),
            "val": round(val, 6) if val is not None else None,
            "test": round(test_ci.mean, 6) if test_ci is not None else None,
            "test_ci": [round(test_ci.low, 6), round(test_ci.high, 6)] if test_ci is not None else None,
            "prompt_words": evaluator.prompt_tokens(c), **extra}


def _prompt_fields(c: Candidate) -> dict[str, Any]:
    """What one prompt is (a program's: its demos summed over the steps, which each say theirs)."""
    n_demos = sum(sc.knn or len(sc.demos) for sc in c.steps) if c.steps else c.knn or len(c.demos)
    return {"instruction": c.instruction, "instruction_origin": c.origin.get("instruction_origin"),
            "n_demos": n_demos, "demo_ids": [d.id for d in c.demos], "demo_selector": c.origin.get("demo_selector")}


def _value(trial: Any) -> float | None:
    return trial.value if trial is not None else None


def trial_fields(trial: Any, objective: bool = False) -> dict[str, Any]:
    """The trial a prompt won (or ran) in; a finished run's winner also has the objective it won on."""
    if trial is None:
        return {}
    out = {"trial": trial.number, "slot": trial_slot(trial), "params": trial.params}
    if objective:
        out["objective_val"] = round(trial.value, 6)
    return out


def scoring_fields(evaluator: Any, c: Candidate) -> dict[str, Any]:
    """How the candidate's answers are read (exported with the prompt): generated text, or label likelihood
    with the calibration offsets it was scored with."""
    out: dict[str, Any] = {"scoring": c.scoring, "demo_order": c.origin.get("order", 0), "knn": c.knn}
    if c.scoring in ("calibrated", "batch"):
        out["calibration"] = offsets_to_json(tuple((evaluator.calibration(c) or {}).items()))
    return out


def _search_fields(ctx: RunContext, diff: dict[str, float], significant: bool) -> dict[str, Any]:
    """A finished run's objective, test gain and search spend."""
    task, setup, search = ctx.task, ctx.setup, ctx.search
    confirmed = int(ctx.phases["confirmation"]["calls"])
    return {"objective": task.objective,
            "improvement": {k: round(v, 6) for k, v in diff.items()},
            "pick": task.optimizer.pick,
            # every call before the test report: setup, trials and the confirmation of the top candidates
            "search_calls": {"cap": ctx.opts.search_calls, "reached": search.capped,
                             "spent": int(setup.get("setup_calls", 0)) + search.spent_calls() + confirmed,
                             "confirmation": confirmed},
            "bootstrap_after_slots": int(setup.get("bootstrap_after_slots", 0)),
            "pareto": search.pareto(),
            "significant": significant}


def _study_fields(ctx: RunContext) -> dict[str, Any]:
    study, storage = ctx.study, ctx.opts.storage
    return {"name": study.study_name, "storage": redact_url(storage) if storage else "run directory",
            "workers": len({t.system_attrs.get(ATTR + "worker") for t in study.get_trials(deepcopy=False)
                            if t.system_attrs.get(ATTR + "worker")})}


def trial_counts(study: Any, n_trials: int) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)] if study is not None else []
    S = optuna.trial.TrialState
    return {"requested": n_trials, "complete": states.count(S.COMPLETE), "pruned": states.count(S.PRUNED),
            "failed": states.count(S.FAIL)}


def usage_fields(usage: dict[str, int], phases: dict[str, dict[str, int]], same_backend: bool) -> dict[str, Any]:
    return {"lm_calls": usage["calls"],
            "task_lm_calls": usage["calls"] - (phases["proposer"]["calls"] if same_backend else 0),
            "proposer_calls": phases["proposer"]["calls"],
            "cache_hits": usage["cache_hits"],
            "paid_calls": usage["paid_calls"],
            "retries": usage.get("retries", 0),
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "phases": phases}
