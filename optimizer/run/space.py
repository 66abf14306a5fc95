"""Phase 2, the candidate space: instruction pool (proposers) x demo pool (selectors, the bootstrap teacher).

The study's creator builds it and publishes it in the study; every other worker, and every resumed
process, reads it from there, so all of them search the same space."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..errors import BudgetExceeded
from ..lm.base import Usage
from ..proposers import ProposalContext, instruction_pool
from ..search import (ATTR, ProgramSpace, SearchSpace, check_setup, ensure_slots, make_sampler, publish_setup,
                      setup_startup, space_of, startup_trials, study_setup, wait_setup)
from ..plugins import SELECTORS
from ..selectors import SelectionContext, demo_pool, fill_pool
from ..steps import bootstrap_traces, step_pool
from .context import RunContext
from .inputs import data_fingerprint, scorings_of
from .trials import run_early_slots
from .verdict import confirmation_calls, confirmation_size


def candidate_space(ctx: RunContext) -> None:
    """Build the space (the creator) or wait for it; then fix the study's trials and sampler from it."""
    task, study, splits = ctx.task, ctx.study, ctx.splits
    data_id = data_fingerprint(splits)
    ctx.setup = study_setup(study)
    if ctx.setup is None and ctx.run.meta.get("creator"):
        build_space(ctx, data_id)
    elif ctx.setup is None:
        ctx.setup = wait_setup(study, timeout=ctx.opts.setup_timeout, on_event=ctx.emit)
    check_setup(ctx.setup, task=task.task, seed=ctx.seed, data=data_id)
    if ctx.space is None:
        ctx.space = space_of(study, splits.train)
    if ctx.n_trials > int(ctx.setup["n_trials"]):  # a larger --trials extends the study
        ctx.setup = {**ctx.setup, "n_trials": ctx.n_trials}
        study.set_user_attr(ATTR + "setup", ctx.setup)
        ensure_slots(study, ctx.space, ctx.n_trials)
    ctx.n_trials = int(ctx.setup["n_trials"])
    study.sampler = make_sampler(ctx.seed, setup_startup(ctx.setup, ctx.n_trials))  # what the creator fixed
    if ctx.notes or not (ctx.run.path / "candidates.json").exists():
        ctx.run.write_json("candidates.json", candidates_record(ctx.space.describe(), ctx.notes))


def candidates_record(described: dict[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
    """candidates.json: the space, each LM-written instruction with the check it passed (from the proposer
    notes, which also list the drafts that were turned down and why), and the selectors' notes. A program's
    space lists every step's instructions, checked against that step's proposer notes."""
    def mark(instructions: list[dict[str, Any]], proposer_notes: dict[str, Any]) -> None:
        checks = {(a["origin"], a["text"]): {k: v for k, v in a.items() if k not in ("origin", "text")}
                  for a in proposer_notes.get("accepted", [])}
        for entry in instructions:
            if (entry["origin"], entry["text"]) in checks:
                entry["check"] = checks[(entry["origin"], entry["text"])]

    if "steps" in described:
        for step in described["steps"]:
            mark(step["instructions"], ((notes.get("proposer_notes") or {}).get(step["name"]) or {}))
    else:
        mark(described["instructions"], notes.get("proposer_notes") or {})
    return {**described, **notes}


def build_space(ctx: RunContext, data_id: str) -> None:
    """The creator's part: propose instructions, select demo sets, run the start trials that need no
    bootstrapped set, let the bootstrap teacher fill the rest of the pool, and publish the space."""
    task, opts, phases = ctx.task, ctx.opts, ctx.phases
    if task.steps:
        build_program_space(ctx, data_id)
        return
    # auto's one label readout of the seed prompt, now that the budget and the spend log count it
    ctx.scorings = scorings_of(task, ctx.evaluator, ctx.splits.validation[0] if ctx.splits.validation else None)
    pool, pctx = propose_instructions(ctx)

    ctx.emit("phase", name="demos")
    sctx = SelectionContext(ctx.splits.train, ctx.seed, labels=task.label_set, evaluator=ctx.evaluator,
                            instruction=task.instruction, budget=task.optimizer.bootstrap_examples)
    max_demos = task.optimizer.max_demos
    # the pool with placeholders for the bootstrap teacher's sets, which need LM calls
    demos = demo_pool(sctx, task.optimizer.demo_sets, max_demos, task.optimizer.selectors,
                      later=True) if max_demos else []
    space = ctx.space = SearchSpace([(p.text, p.origin) for p in pool], demos, max_demos,
                                    ctx.scorings, task.optimizer.demo_orders, task.optimizer.start,
                                    task.optimizer.start_demos, task.optimizer.readouts != "searched")
    proposer_calls = sum(phases[k]["calls"] for k in ("proposer", "probe"))
    # the start trials need no bootstrapped set: with the run's own storage they run first, so the
    # first incumbent is scored that many calls sooner (the trials and the pool are the same)
    early = space.early_slots() if ctx.exclusive and any(not exs for _, exs in demos) else 0
    startup = task.optimizer.startup_trials or startup_trials(ctx.n_trials)
    if early:
        reserve = sum(SELECTORS.get(k).planned_calls(sctx, max_demos)  # the teacher still runs after them
                      for k in dict.fromkeys(task.optimizer.selectors))
        # and the confirmation after the search (at most as many examples as validation has)
        confirm = confirmation_calls(confirmation_size(opts.search_calls, proposer_calls + reserve,
                                                       len(ctx.splits.validation)))
        run_early_slots(ctx, early, startup, None if opts.search_calls is None
                        else max(0, opts.search_calls - proposer_calls - reserve - confirm))
    fixed = [space.fixed_params(k) for k in range(early)]
    u0 = ctx.backend.usage
    space.demo_sets = fill_pool(sctx, demos, max_demos)
    phases["bootstrap"] = (ctx.backend.usage - u0).to_dict()
    if [space.fixed_params(k) for k in range(early)] != fixed:
        raise RuntimeError("an early slot's candidate changed when the demo pool was filled")
    ctx.notes = {"proposer_notes": pctx.notes, "selector_notes": sctx.notes}
    if ctx.evaluator.auto_note:
        ctx.notes["scoring_note"] = ctx.evaluator.auto_note
    ctx.setup = {"task": task.task, "seed": ctx.seed, "data": data_id, "n_trials": ctx.n_trials,
                 "validation": len(ctx.splits.validation), "optimizer_version": __version__,
                 "setup_calls": proposer_calls + phases["bootstrap"]["calls"],
                 # slots that ran before the bootstrap teacher (their calls are the search's)
                 "bootstrap_after_slots": early,
                 # fixed for every worker and every resumed process
                 "startup_trials": startup}
    publish_setup(ctx.study, space, ctx.setup)


def build_program_space(ctx: RunContext, data_id: str) -> None:
    """The creator's part for a program of steps (``optimizer.steps``): bootstrap traces of the seed program
    (the demos of every step), then per step an instruction pool (the proposers, shown that step's fields
    and examples) and demo sets (or a kNN pool) drawn from its pool by the selectors that call no LM; publish
    the space."""
    task, phases, opt = ctx.task, ctx.phases, ctx.task.optimizer
    ev = ctx.evaluator
    ctx.scorings = ev.scorings(opt.scoring)
    ctx.emit("phase", name="demos")
    u0 = ctx.backend.usage
    traces, boot_notes = bootstrap_traces(ev, ctx.splits.train, ctx.seed, opt.bootstrap_examples, opt.max_demos)
    phases["bootstrap"] = (ctx.backend.usage - u0).to_dict()
    ctx.emit("phase", name="instructions")
    u0 = ctx.proposer_backend.usage
    # the bootstrap above is a program's LM-calling selector; a kNN pool retrieves over the step's own inputs
    kinds = [k for k in opt.selectors if not SELECTORS.get(k).makes_lm_calls]
    spaces, proposer_notes, selector_notes, probes = [], {}, {}, Usage()
    for i, (st, sub) in enumerate(zip(task.steps or [], ev.steps)):
        pool = step_pool(task, i, ctx.splits.train, traces)
        final = sub.task.output.name == task.output.name
        pctx = ProposalContext(sub.task, pool, ctx.seed, ctx.proposer_backend,
                               chat=ctx.proposer_profile.resolved_adapter == "chat",
                               evaluator=sub if final else None, scoring="generate")
        instructions = instruction_pool(pctx, opt.instructions, opt.proposers)
        probe = pctx.notes.pop("probe_usage", None)
        if probe:  # the reflective probes ran the final step's prompt: task-LM calls
            probes += Usage(**{k: v for k, v in probe.items() if k != "paid_calls"})
        sctx = SelectionContext(pool, ctx.seed, labels=sub.task.label_set if final else None,
                                instruction=st.instruction)
        sets = demo_pool(sctx, opt.demo_sets, opt.max_demos, kinds or ["random"]) if opt.max_demos and pool else []
        spaces.append(SearchSpace([(p.text, p.origin) for p in instructions], sets, opt.max_demos, ["generate"],
                                  opt.demo_orders, "demos", opt.start_demos, False))
        proposer_notes[st.name], selector_notes[st.name] = pctx.notes, {**sctx.notes, "pool": len(pool)}
    proposer_used = ctx.proposer_backend.usage - u0
    if probes.calls:
        phases["probe"] = probes.to_dict()
        if ctx.proposer_backend is ctx.backend:
            proposer_used = proposer_used - probes
    phases["proposer"] = proposer_used.to_dict()
    if ctx.budget.tripped:
        raise BudgetExceeded(ctx.budget.tripped, field=ctx.budget.tripped.split()[0],
                             fix="raise the budget and run the same command again to continue")
    ctx.space = space = ProgramSpace([st.name for st in task.steps or []], spaces)
    ctx.notes = {"bootstrap_notes": boot_notes, "proposer_notes": proposer_notes, "selector_notes": selector_notes}
    ctx.setup = {"task": task.task, "seed": ctx.seed, "data": data_id, "n_trials": ctx.n_trials,
                 "validation": len(ctx.splits.validation), "optimizer_version": __version__,
                 "setup_calls": sum(phases[k]["calls"] for k in ("bootstrap", "proposer", "probe")),
                 "bootstrap_after_slots": 0, "startup_trials": opt.startup_trials or startup_trials(ctx.n_trials)}
    publish_setup(ctx.study, space, ctx.setup)


def propose_instructions(ctx: RunContext) -> tuple[list[Any], ProposalContext]:
    """The instruction pool; the proposer's LM use (and the reflective probes', which ran the task prompt)
    goes to the summary's phases."""
    ctx.emit("phase", name="instructions")
    proposer, budget = ctx.proposer_backend, ctx.budget
    u0 = proposer.usage
    pctx = ProposalContext(ctx.task, ctx.splits.train, ctx.seed, proposer,
                           chat=ctx.proposer_profile.resolved_adapter == "chat", evaluator=ctx.evaluator,
                           scoring=ctx.scorings[0])
    pool = instruction_pool(pctx, ctx.task.optimizer.instructions, ctx.task.optimizer.proposers)
    probe = pctx.notes.pop("probe_usage", None)
    proposer_used = proposer.usage - u0
    if probe and proposer is ctx.backend:  # the reflective probes ran the task prompt: task-LM calls
        proposer_used = proposer_used - Usage(**{k: v for k, v in probe.items() if k != "paid_calls"})
    ctx.phases["proposer"] = proposer_used.to_dict()
    if probe:
        ctx.phases["probe"] = probe
    if budget.tripped:  # the proposer swallows LM errors: do not publish a pool cut short by the budget
        raise BudgetExceeded(budget.tripped, field=budget.tripped.split()[0],
                             fix="raise the budget and run the same command again to continue")
    return pool, pctx
