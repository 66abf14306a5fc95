"""Reflective mutation inside the search (GEPA's way; ``optimizer.reflect``: the number of rounds).

The trial slots are cut into ``reflect + 1`` shares. After each share but the last, one round:

1. **the parent** is drawn from the Pareto front over the examples trials are scored on (GEPA's
   selection): each distinct complete candidate's per-example scores are the ones its trial reported (no
   LM call); a candidate is on the front when it has the best score on some example that not every
   candidate ties on and no other candidate is best on a strict superset of those examples; it is drawn
   with probability proportional to how many examples it is best on (seeded by the round). With no such
   example (every candidate ties everywhere) the parent is the incumbent, the best complete trial;
2. the parent answers a minibatch of those examples (seeded by the round; mostly memoised already), and its
   failures there, with its instruction and score, go to the proposer LM in the reflective proposer's
   request (``ReflectiveProposer._reflect_prompt``), which writes one new instruction;
3. the draft must pass the LM proposer's checks, be new to the pool, and, with the parent's demos and
   readout, **beat the parent on that same minibatch** (GEPA's acceptance rule);
4. an accepted instruction joins the instruction pool, published with the space (every later trial may
   sample it; a resumed process reads it), and the next slot runs it with the parent's other parameters;
5. **merge**: when the front holds two candidates that differ in both instruction and demos (the
   highest-ranked such pair), each one's instruction with the other's demos and readout answers the minibatch;
   the better of the two, if it beats both parents there, is run by the slot after the next one (when that
   slot is still waiting in this share). It adds no instruction: it points the search at a combination.

Every round, accepted or not, is recorded in the study (``reflections``, the front included), so a resumed
run never repeats one, and listed in candidates.json with what it was shown and why it was kept or turned
down. Its LM calls are the search's (and count against ``--search-calls``). Rounds need the run's own
storage (one process decides the pool) and a one-call task.
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

#: examples of a round's minibatch (the parent and the draft are compared on the same ones)
MINIBATCH = 16
#: candidates a round scores on its minibatch at most: the parent, its draft, two front members, two merges
MINIBATCH_RUNS = 6


def reflection_bounds(n_trials: int, rounds: int) -> list[int]:
    """The slots before which a round runs: the trials cut into ``rounds + 1`` about equal shares."""
    return sorted({round(n_trials * (r + 1) / (rounds + 1)) for r in range(rounds)} - {0, n_trials})


def rounds_done(ctx: RunContext) -> list[dict[str, Any]]:
    return list(ctx.study.user_attrs.get(ATTR + "reflections") or [])


def _comparable(c: Candidate) -> Candidate:
    """The candidate read the way a minibatch comparison can: batch offsets belong to one prompt, so a
    batch-calibrated incumbent and its child are both read with contextual calibration."""
    return dataclasses.replace(c, scoring="calibrated", offsets=()) if c.scoring == "batch" else c


@dataclasses.dataclass
class FrontMember:
    """A candidate on the Pareto front over examples: its (first) trial and the examples it is best on."""

    trial: Any
    candidate: Candidate
    wins: frozenset[int]


def pareto_front(ctx: RunContext) -> list[FrontMember]:
    """The distinct complete candidates not dominated on the examples trials are scored on, most wins first
    (ties: the better trial value, then the earlier trial). Per-example scores are the values each trial
    reported under its steps (one step per example, the same step for the same example in every trial)."""
    seen: dict[str, tuple[Any, Candidate]] = {}
    for t in ctx.study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.value is not None and t.intermediate_values:
            cand = ctx.search.candidate_for(t)
            if cand.key not in seen:
                seen[cand.key] = (t, cand)
    members = list(seen.values())
    steps = sorted({k for t, _ in members for k in t.intermediate_values})
    wins: dict[str, set[int]] = {c.key: set() for _, c in members}
    for k in steps:
        values = [t.intermediate_values.get(k, float("-inf")) for t, _ in members]
        top = max(values)
        if all(v == top for v in values):
            continue  # every candidate ties here: it tells them apart nowhere
        for (t, c), v in zip(members, values):
            if v == top:
                wins[c.key].add(k)
    rank = sorted(members, key=lambda m: (-len(wins[m[1].key]), -float(m[0].value), m[0].number))
    front: list[FrontMember] = []
    for t, c in rank:
        mine = wins[c.key]
        if mine and not any(mine <= f.wins for f in front):  # a superset or an equal set ranked higher
            front.append(FrontMember(t, c, frozenset(mine)))
    return front


def choose_parent(front: list[FrontMember], rng: random.Random) -> FrontMember | None:
    """A front member drawn with probability proportional to its wins (None: an empty front)."""
    if not front:
        return None
    return rng.choices(front, weights=[len(m.wins) for m in front], k=1)[0]


def reflect_round(ctx: RunContext, slot: int) -> dict[str, Any]:
    """One round before ``slot``; returns its record (also stored in the study)."""
    task = ctx.task
    u0, p0 = ctx.backend.usage, ctx.proposer_backend.usage
    front = pareto_front(ctx)
    drawn = choose_parent(front, random.Random(f"{ctx.seed}:parent:{slot}"))
    if drawn is None:
        parent_trial, parent = ctx.search.best(task.optimizer.pick)
    else:
        parent_trial, parent = drawn.trial, drawn.candidate
    examples = list(ctx.selection)
    random.Random(f"{ctx.seed}:reflect:{slot}").shuffle(examples)
    mini = examples[:MINIBATCH]
    rec: dict[str, Any] = {"slot": slot, "parent_trial": parent_trial.number, "parent": parent.instruction,
                           "parent_from": "front" if drawn is not None else "incumbent",
                           "front": [{"trial": m.trial.number, "wins": len(m.wins)} for m in front],
                           "minibatch": [e.id for e in mini]}
    try:
        rec.update(_round(ctx, slot, parent_trial, parent, mini))
        pair = merge_pair(front)
        if pair is not None:
            rec["merge"] = _merge(ctx, slot, *pair, mini)
        elif len(front) >= 2:
            rec["merge"] = {"tried": False, "reason": "no two front members differ in both instruction and demos"}
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


def _round(ctx: RunContext, slot: int, parent_trial: Any, incumbent: Candidate, mini: list) -> dict[str, Any]:
    task, space, ev = ctx.task, ctx.space, ctx.evaluator
    parent = _comparable(incumbent)
    parent_res = ev.evaluate(parent, mini)
    failures = [(ex, ev.answer(o) or o.text.strip()) for ex, o in zip(mini, parent_res.outcomes) if o.score < 1]
    out: dict[str, Any] = {"parent_score": round(parent_res.mean, 4)}
    if not failures:
        return {**out, "accepted": False, "reason": "the parent answers the whole minibatch right"}
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
        return {**out, "accepted": False, "reason": "does not beat the parent on the minibatch"}
    space.instructions.append((text, "reflect"))
    ctx.study.set_user_attr(ATTR + "space", space.describe())
    params = {**parent_trial.params, "instruction": len(space.instructions) - 1}
    _fix_slot(ctx, slot, params)  # the next slot runs the child with the parent's other parameters
    return {**out, "accepted": True, "instruction": len(space.instructions) - 1, "next_slot_params": params}


def _fix_slot(ctx: RunContext, slot: int, params: dict[str, Any]) -> bool:
    """Give the waiting trial of ``slot`` these parameters (Optuna's ``fixed_params``); False if none waits."""
    waiting = [t for t in ctx.study.get_trials(deepcopy=False)
               if trial_slot(t) == slot and t.state == TrialState.WAITING]
    for t in waiting:
        ctx.study._storage.set_trial_system_attr(t._trial_id, "fixed_params", params)
    return bool(waiting)


def _differ(a: FrontMember, b: FrontMember) -> bool:
    """Whether two members differ in both instruction and demos (demo set, count, order, readout)."""
    pa, pb = a.trial.params, b.trial.params
    demo_keys = [k for k in ("demo_set", "n_demos", "order", "scoring") if k in pa or k in pb]
    return pa.get("instruction") != pb.get("instruction") and any(pa.get(k) != pb.get(k) for k in demo_keys)


def merge_pair(front: list[FrontMember]) -> tuple[FrontMember, FrontMember] | None:
    """The highest-ranked two front members that differ in both instruction and demos (None: no such pair)."""
    for j in range(1, len(front)):
        for i in range(j):
            if _differ(front[i], front[j]):
                return front[i], front[j]
    return None


def _merge(ctx: RunContext, slot: int, a: FrontMember, b: FrontMember, mini: list) -> dict[str, Any]:
    """GEPA's merge for one call: each front member's instruction with the other's demos and readout on the
    minibatch; the better one, if it beats both members there, goes to the slot after the next."""
    if not _differ(a, b):
        return {"tried": False, "reason": "the two front members share their instruction or their demos"}
    ev = ctx.evaluator
    rec: dict[str, Any] = {"tried": True, "members": [a.trial.number, b.trial.number]}
    scores = [ev.evaluate(_comparable(m.candidate), mini).mean for m in (a, b)]
    best: tuple[float, dict[str, Any]] | None = None
    for src, dst in ((a, b), (b, a)):  # src's instruction, dst's demos and readout
        params = {**dst.trial.params, "instruction": src.trial.params["instruction"]}
        cand = dataclasses.replace(dst.candidate, instruction=src.candidate.instruction,
                                   origin={**dst.candidate.origin, **{k: v for k, v in src.candidate.origin.items()
                                                                      if k.startswith("instruction")}})
        score = ev.evaluate(_comparable(cand), mini).mean
        if best is None or score > best[0]:
            best = (score, params)
    assert best is not None
    rec.update(member_scores=[round(x, 4) for x in scores], child_score=round(best[0], 4), params=best[1])
    if best[0] <= max(scores):
        return {**rec, "accepted": False, "reason": "does not beat both front members on the minibatch"}
    bounds = reflection_bounds(ctx.n_trials, ctx.task.optimizer.reflect)
    share_end = min([b for b in bounds if b > slot] + [ctx.n_trials])
    if slot + 1 >= share_end or not _fix_slot(ctx, slot + 1, best[1]):
        return {**rec, "accepted": False, "reason": "no waiting slot left in this share"}
    return {**rec, "accepted": True, "slot": slot + 1}


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
