"""A reflection round inside the search on the real models: the embedded base model answers, the instruct
model reads the incumbent's failures and writes an instruction, which joins the pool only when it beats
the incumbent on the round's minibatch (``optimizer.reflect``)."""

from __future__ import annotations

import json

import pytest

from conftest import sst2_task
from optimizer.engine import RunOptions, optimize

pytestmark = pytest.mark.integration


def test_a_reflection_round_with_the_instruct_writer(tmp_path, cache_dir):
    task = sst2_task(trials=4, reflect=1, proposers=["offline"], instructions=2, max_demos=4, demo_sets=2,
                     proposer_lm="local-instruct", train=24, validation=12, test=12)
    res = optimize(task, RunOptions(out=tmp_path / "run", cache_dir=cache_dir, seed=0))
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    (rnd,) = cands["reflections"]
    assert rnd["slot"] == 2 and len(rnd["minibatch"]) == 12 and 0.0 <= rnd["parent_score"] <= 1.0
    assert rnd["lm_calls"] > 0 and rnd["draft"], rnd
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    if rnd["accepted"]:
        assert rnd["child_score"] > rnd["parent_score"] and trials[2]["params"] == rnd["next_slot_params"]
        assert cands["instructions"][rnd["instruction"]]["text"] == rnd["draft"]
    else:  # turned down by a check of the LM proposer, or by the minibatch
        assert isinstance(rnd["reason"], str) and rnd["reason"], rnd
        assert all(i["origin"] != "reflect" for i in cands["instructions"])
    assert res.summary["best"]["test"] is not None
