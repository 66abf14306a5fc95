"""Phase 3, the search: Optuna trials over the candidate space, scored on the validation split (and the
cross-fitted training examples); ``optimizer.search.Search`` scores a trial, this module runs them."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from ..program import Candidate
from ..search import Search, balanced_weights, ensure_slots, make_sampler
from .context import RunContext
from .inputs import finished_trials
from .reflect import record_reflections, reflect_round, reflection_bounds, rounds_done
from .verdict import calls_per_answer, confirmation_calls, confirmation_sample, confirmation_size


def make_search(ctx: RunContext, call_cap: int | None) -> Search:
    task, splits, run = ctx.task, ctx.splits, ctx.run
    return Search(ctx.study, ctx.space, ctx.evaluator, ctx.selection, seed=ctx.seed, on_event=ctx.emit,
                  trial_log=run.append_trial, exclusive=ctx.exclusive, worker_id=run.meta["worker"],
                  max_failure_rate=ctx.opts.max_failure_rate, grace=ctx.opts.grace,
                  shared_order=task.optimizer.racing == "halving", stratify=bool(task.label_set),
                  readout_after=min(task.optimizer.min_examples, len(splits.validation)),
                  weights=balanced_weights(ctx.selection) if task.objective == "balanced" else None,
                  n_validation=len(splits.validation), call_cap=call_cap)


def run_early_slots(ctx: RunContext, early: int, startup: int, call_cap: int | None) -> None:
    """The start trials that need no bootstrapped set, run before the bootstrap teacher (their calls are the
    search's): with the run's own storage the first incumbent is scored that many calls sooner."""
    ctx.study.sampler = make_sampler(ctx.seed, startup)
    ensure_slots(ctx.study, ctx.space, early)
    ctx.search = make_search(ctx, call_cap)
    u0 = ctx.backend.usage
    try:
        ctx.search.run()
    finally:
        ctx.early_search = ctx.backend.usage - u0
        ctx.phases["search"] = ctx.early_search.to_dict()


def search_cap(ctx: RunContext) -> int | None:
    """The trials' share of ``--search-calls``: what setup (proposer, probes, bootstrap) left, less what the
    confirmation of the top candidates will take after the search (``verdict.confirmation_calls``)."""
    if ctx.opts.search_calls is None:
        return None
    setup, per = int(ctx.setup.get("setup_calls", 0)), calls_per_answer(ctx.task)
    size = confirmation_size(ctx.opts.search_calls, setup, len(confirmation_sample(ctx)), per)
    return max(0, ctx.opts.search_calls - setup - confirmation_calls(size, per))


def run_search(ctx: RunContext) -> tuple[Any, Candidate]:
    """Run the study's trials (those left after a resume or by other workers) and return the winner:
    its trial and its candidate."""
    splits, opts = ctx.splits, ctx.opts
    ctx.emit("phase", name="search", trials=ctx.n_trials, validation=len(splits.validation),
             done=finished_trials(ctx.study))
    ctx.search = make_search(ctx, search_cap(ctx))
    u0 = ctx.backend.usage
    rounds = reflection_bounds(ctx.n_trials, ctx.task.optimizer.reflect) if (
        ctx.task.optimizer.reflect and ctx.exclusive and not ctx.task.steps) else []
    try:
        for bound in rounds + [None]:
            ctx.search.run(until=bound)
            if bound is None or ctx.search.capped or bound in {r["slot"] for r in rounds_done(ctx)}:
                continue
            if not any(t.state == TrialState.COMPLETE for t in ctx.study.get_trials(deepcopy=False)):
                continue  # no incumbent yet (every trial so far was pruned or failed)
            ctx.emit("phase", name=f"reflect before slot {bound}")
            ctx.emit("reflect", record=reflect_round(ctx, bound))
        if rounds:
            record_reflections(ctx)
    finally:
        ctx.phases["search"] = (ctx.backend.usage - u0 + ctx.early_search).to_dict()
        try:
            ctx.run.write_trials(ctx.search.records())
        except Exception:  # the storage itself failed: keep the live trials.jsonl, raise the first error
            pass
    return ctx.search.best(ctx.task.optimizer.pick)
