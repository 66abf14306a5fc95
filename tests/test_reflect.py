"""Reflective mutation inside the search (``optimizer.reflect``, GEPA's way): a round between trial slots
reads the incumbent's failures on a minibatch, and the instruction the proposer LM writes joins the pool only
when it beats the incumbent there; the next slot runs it. On a scripted LM whose answers are right under
the written instruction (``_Writer``), and one that gains nothing from it."""

from __future__ import annotations

import json

from conftest import sst2_task
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.lm.cache import ResponseCache
from optimizer.run.reflect import reflection_bounds
from test_search_levers import _Writer


def writer(task, helps=True, cache=None):
    s = make_splits(task)
    w = _Writer({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}, helps=helps)
    w.cache = cache
    return w


def test_bounds_cut_the_slots_into_shares():
    assert reflection_bounds(12, 1) == [6] and reflection_bounds(12, 2) == [4, 8] and reflection_bounds(3, 5) == [1, 2]
    assert reflection_bounds(8, 0) == []


def test_a_round_adds_the_instruction_that_beats_the_incumbent_and_the_next_slot_runs_it(tmp_path):
    task = sst2_task(trials=6, reflect=1, proposers=["offline"], instructions=2, max_demos=2, demo_sets=2,
                     train=16, validation=12, test=12)
    w = writer(task)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=w, seed=0))
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    (rnd,) = cands["reflections"]
    assert rnd["slot"] == 3 and rnd["accepted"] and rnd["draft"] == _Writer.FIX
    # the writer was shown the incumbent's failures and every instruction tried so far with its score
    (asked,) = [p for p in w.prompts if "Improved instruction:" in p]
    assert "Expected sentiment:" in asked and "Produced:" in asked and f": {task.instruction}" in asked
    assert rnd["child_score"] == 1.0 > rnd["parent_score"] and len(rnd["minibatch"]) == 12  # all 12 validation
    added = cands["instructions"][rnd["instruction"]]
    assert added["origin"] == "reflect" and added["text"] == _Writer.FIX and added["check"]["slot"] == 3
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert trials[3]["params"] == rnd["next_slot_params"]  # the child, with the incumbent's demos
    assert res.summary["best"]["instruction"] == _Writer.FIX and res.summary["best"]["instruction_origin"] == "reflect"
    assert res.summary["best"]["test"] == 1.0


def test_a_draft_that_does_not_beat_the_incumbent_stays_out_and_a_resumed_run_repeats_no_round(tmp_path):
    task = sst2_task(trials=6, reflect=1, proposers=["offline"], instructions=2, max_demos=2, demo_sets=2,
                     train=16, validation=12, test=12)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=writer(task, helps=False, cache=cache), seed=0))
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    (rnd,) = cands["reflections"]
    assert not rnd["accepted"] and rnd["reason"] == "does not beat the incumbent on the minibatch"
    assert [i["origin"] for i in cands["instructions"]].count("reflect") == 0
    again = writer(task, helps=False, cache=cache)
    res2 = optimize(task, RunOptions(out=tmp_path / "run", backend=again, seed=0))
    assert res2.summary["best"]["test"] == res.summary["best"]["test"] and again.usage.paid_calls == 0
    assert len(json.loads((tmp_path / "run" / "candidates.json").read_text())["reflections"]) == 1


def test_the_dry_run_counts_the_rounds(tmp_path):
    from optimizer.run.plan import plan

    base = sst2_task(trials=6, train=16, validation=12, test=12)
    with_rounds = sst2_task(trials=6, reflect=2, train=16, validation=12, test=12)
    a = plan(base, RunOptions(out=tmp_path / "a"))["phases"]["search"]["calls"]
    b = plan(with_rounds, RunOptions(out=tmp_path / "b"))["phases"]["search"]["calls"]
    assert b - a == 2 * (2 * 12 + 1)  # two rounds: the incumbent and the draft on 12 examples, one draft each


def test_a_chat_writer_is_asked_for_the_instruction_alone():
    from optimizer.proposers import ProposalContext, ReflectiveProposer, _REFLECT_ASK

    task = sst2_task()
    ex = make_splits(task).train[0]
    w = ReflectiveProposer()
    chat = w._reflect_prompt(task, task.instruction, [(ex, "negative")], [(0.5, task.instruction)], chat=True)
    plain = w._reflect_prompt(task, task.instruction, [(ex, "negative")], [(0.5, task.instruction)])
    assert chat.endswith(_REFLECT_ASK) and plain.endswith("Improved instruction:")
    ctx = ProposalContext(task, [], 0, None, chat=True)
    echo = w.check("Label the movie review sentiment. Do not repeat the examples, their answers or this request.",
                   ctx, [])
    assert echo["reason"] == "repeats the request it was given"
