"""Reflective mutation inside the search (GEPA's way; ``optimizer.reflect``: the number of rounds).

The trial slots are cut into ``reflect + 1`` shares. After each share but the last, one round:

1. the incumbent (the best complete trial so far) answers a minibatch of the examples trials are scored on
   (seeded by the round; its answers are mostly memoised already);
2. its failures there, with its instruction and score, go to the proposer LM in the reflective proposer's
   request (``ReflectiveProposer._reflect_prompt``), which writes one new instruction;
3. the draft must pass the LM proposer's checks, be new to the pool, and, with the incumbent's demos and
   readout, **beat the incumbent on that same minibatch** (GEPA's acceptance rule);
4. an accepted instruction joins the instruction pool, published with the space (every later trial may
   sample it; a resumed process reads it), and the next slot runs it with the incumbent's other parameters.

Every round, accepted or not, is recorded in the study (``reflections``), so a resumed run never repeats
one, and listed in candidates.json with what it was shown and why it was kept or turned down. Its LM calls
are the search's (and count against ``--search-calls``). Rounds need the run's own storage (one process
decides the pool) and a one-call task; GEPA's Pareto front over examples and its merge are not done.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from optuna.trial import TrialState

from ..errors import LMCallFailed
from ..program import Candidate
from ..proposers import ProposalContext, ReflectiveProposer
from ..search import ATTR
from ..search.sampling import trial_slot
from .context import RunContext

#: examples of a round's minibatch (the incumbent and the draft are compared on the same ones)
MINIBATCH = 16


def reflection_bounds(n_trials: int, rounds: int) -> list[int]:
    """The slots before which a round runs: the trials cut into ``rounds + 1`` about equal shares."""
    return sorted({round(n_trials * (r + 1) / (rounds + 1)) for r in range(rounds)} - {0, n_trials})


def rounds_done(ctx: RunContext) -> list[dict[str, Any]]:
    return list(ctx.study.user_attrs.get(ATTR + "reflections") or [])


def _comparable(c: Candidate) -> Candidate:
    """The candidate read the way a minibatch comparison can: batch offsets belong to one prompt, so a
    batch-calibrated incumbent and its child are both read with contextual calibration."""
    return dataclasses.replace(c, scoring="calibrated", offsets=()) if c.scoring == "batch" else c


def reflect_round(ctx: RunContext, slot: int) -> dict[str, Any]:
    """One round before ``slot``; returns its record (also stored in the study)."""
    task = ctx.task
    u0, p0 = ctx.backend.usage, ctx.proposer_backend.usage
    best_trial, incumbent = ctx.search.best(task.optimizer.pick)
    examples = list(ctx.selection)
    random.Random(f"{ctx.seed}:reflect:{slot}").shuffle(examples)
    mini = examples[:MINIBATCH]
    rec: dict[str, Any] = {"slot": slot, "parent_trial": best_trial.number, "parent": incumbent.instruction,
                           "minibatch": [e.id for e in mini]}
    try:
        rec.update(_round(ctx, slot, best_trial, incumbent, mini))
    except LMCallFailed as exc:  # a lost call: the round keeps nothing and the search goes on
        rec.update(accepted=False, reason=f"an LM call failed: {exc}")
    used = ctx.backend.usage - u0
    if ctx.proposer_backend is not ctx.backend:
        used = used + (ctx.proposer_backend.usage - p0)
    rec["lm_calls"] = used.calls
    ctx.study.set_user_attr(ATTR + "reflections", rounds_done(ctx) + [rec])
    if ctx.search.call_cap is not None:  # the round's calls are the search's
        ctx.search.call_cap = max(0, ctx.search.call_cap - used.calls)
    return rec


def _round(ctx: RunContext, slot: int, best_trial: Any, incumbent: Candidate, mini: list) -> dict[str, Any]:
    task, space, ev = ctx.task, ctx.space, ctx.evaluator
    parent = _comparable(incumbent)
    parent_res = ev.evaluate(parent, mini)
    failures = [(ex, ev.answer(o) or o.text.strip()) for ex, o in zip(mini, parent_res.outcomes) if o.score < 1]
    out: dict[str, Any] = {"parent_score": round(parent_res.mean, 4)}
    if not failures:
        return {**out, "accepted": False, "reason": "the incumbent answers the whole minibatch right"}
    writer = ReflectiveProposer()
    pctx = ProposalContext(task, ctx.splits.train, ctx.seed, ctx.proposer_backend,
                           chat=ctx.proposer_profile.resolved_adapter == "chat")
    history = _history(ctx, space.instructions)  # every instruction tried so far, with its best trial's score
    prompt = writer._reflect_prompt(task, incumbent.instruction, failures, history, chat=pctx.chat)
    text = writer._draft(pctx, prompt, 1000 + slot)
    out.update(draft=text, failures_shown=min(len(failures), writer.k))
    check = writer.check(text, pctx, [ex for ex, _ in failures]) if text else {"passed": False, "reason": "empty"}
    if check.get("passed") and text.strip().lower() in {t.strip().lower() for t, _ in space.instructions}:
        check = {"passed": False, "reason": "already in the pool"}
    if not check.get("passed"):
        return {**out, "accepted": False, "reason": check.get("reason")}
    child = dataclasses.replace(parent, instruction=text, origin={**parent.origin, "instruction_origin": "reflect"})
    child_score = ev.evaluate(child, mini).mean
    out.update(child_score=round(child_score, 4), task_words=check.get("task_words"))
    if child_score <= parent_res.mean:
        return {**out, "accepted": False, "reason": "does not beat the incumbent on the minibatch"}
    space.instructions.append((text, "reflect"))
    ctx.study.set_user_attr(ATTR + "space", space.describe())
    params = {**best_trial.params, "instruction": len(space.instructions) - 1}
    waiting = [t for t in ctx.study.get_trials(deepcopy=False) if trial_slot(t) == slot and not t.state.is_finished()]
    for t in waiting:  # the next slot runs the child with the incumbent's other parameters
        ctx.study._storage.set_trial_system_attr(t._trial_id, "fixed_params", params)
    return {**out, "accepted": True, "instruction": len(space.instructions) - 1, "next_slot_params": params}


def _history(ctx: RunContext, instructions: list[tuple[str, str]]) -> list[tuple[float, str]]:
    """(best complete trial's objective, instruction) for each instruction the trials have tried (OPRO's
    scored history, which the reflective request shows)."""
    best: dict[int, float] = {}
    for t in ctx.study.get_trials(deepcopy=False):
        i = t.params.get("instruction")
        if t.state == TrialState.COMPLETE and t.value is not None and isinstance(i, int) and i < len(instructions):
            best[i] = max(best.get(i, float("-inf")), float(t.value))
    return [(v, instructions[i][0]) for i, v in sorted(best.items())]


def record_reflections(ctx: RunContext) -> None:
    """candidates.json with the rounds (``reflections``) and the pool as it ends: an instruction a round added
    is listed with its origin ``reflect`` and, as ``check``, the round that accepted it."""
    path = ctx.run.path / "candidates.json"
    doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    rounds = rounds_done(ctx)
    kept = {r["instruction"]: r for r in rounds if r.get("accepted")}
    old = {e["index"]: e for e in doc.get("instructions", [])}
    entries = []
    for e in ctx.space.describe()["instructions"]:
        if e["index"] in old:
            entries.append(old[e["index"]])
        else:
            r = kept.get(e["index"], {})
            entries.append({**e, "check": {k: r.get(k) for k in ("slot", "parent", "parent_score", "child_score",
                                                                    "task_words", "minibatch")}})
    ctx.run.write_json("candidates.json", {**doc, "instructions": entries, "reflections": rounds})
