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
    # the scripted model answers alike under every prompt so far: no example tells them apart, no front
    assert rnd["front"] == [] and rnd["parent_from"] == "incumbent" and "merge" not in rnd
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
    assert not rnd["accepted"] and rnd["reason"] == "does not beat the parent on the minibatch"
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
    # two rounds, each on 12 examples: the parent and the draft, the merge's two members and two children; a draft
    assert b - a == 2 * (6 * 12 + 1)


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
    # the TREC draft that was accepted and won: it copied the request's history (its header and score lines)
    trec = ("Here's an improved instruction: Instructions tried so far, with their accuracy (higher is better): "
            "0.51: Classify the movie review by its sentiment. 0.54: Classify the sentiment of the movie review.")
    for chat_ctx in (ctx, ProposalContext(task, [], 0, None, chat=False)):
        assert w.check(trec, chat_ctx, [])["reason"] == "repeats the request it was given"
    ok = w.check("Classify the sentiment of the movie review as negative or positive.", ctx, [])
    assert ok["passed"], ok
    # an AG News reflection draft on the instruct model that looped (accepted before the check, then lost)
    loop = w.check("1. Classify the movie review by sentiment. Classify the movie review by sentiment. 2. Classify "
                   "the movie review by sentiment.", ctx, [])
    assert loop["reason"] == "repeats one of its sentences", loop
    steps = w.check("1. Read the movie review. 2. Decide its sentiment. 3. Answer negative or positive.", ctx, [])
    assert steps["passed"], steps


def test_a_chat_drafts_lead_in_is_dropped():
    from optimizer.lm.base import LMBackend, LMResponse
    from optimizer.lm.profiles import LMProfile
    from optimizer.proposers import LMProposer, ProposalContext

    class Says(LMBackend):
        name = "says"

        def __init__(self):
            super().__init__(LMProfile(name="s", backend="local", model="s"))

        @property
        def model_id(self):
            return "says"

        def _generate(self, request):
            return LMResponse(text=f"{request.messages[-1][1]} Classify the review's sentiment.",
                              prompt_tokens=1, completion_tokens=1)

    ctx = ProposalContext(sst2_task(), [], 0, Says(), chat=True)
    for lead in ("Here's an improved instruction:", "Sure, here's a improved instruction:", "Instruction:"):
        assert LMProposer()._draft(ctx, lead, 0) == "Classify the review's sentiment.", lead


# ------------------------------------------------------------------ the Pareto front and the merge

def _study(trials, waiting=()):
    """An in-memory study of complete trials (params, value, per-example scores by step) and waiting slots."""
    import optuna
    from optuna.distributions import IntDistribution

    from optimizer.search import ATTR

    study = optuna.create_study(direction="maximize")
    for params, value, scores in trials:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=value, params=params, intermediate_values=scores,
            distributions={k: IntDistribution(0, 9) for k in params}, user_attrs={ATTR + "slot": len(study.trials)}))
    for slot in waiting:
        study.enqueue_trial({}, user_attrs={ATTR + "slot": slot})
    return study


def _ctx(study, **kw):
    from types import SimpleNamespace

    from optimizer.examples import Example
    from optimizer.program import Candidate

    def candidate(t):
        demos = tuple(Example(f"d{t.params.get('demo_set', 0)}:{j}", {"sentence": "x"}, "positive")
                      for j in range(t.params.get("n_demos", 0)))
        return Candidate(f"instruction {t.params['instruction']}", demos)
    return SimpleNamespace(study=study, search=SimpleNamespace(candidate_for=candidate), **kw)


def test_the_front_keeps_candidates_best_somewhere_and_drops_the_dominated():
    import random

    from optimizer.run.reflect import choose_parent, pareto_front

    study = _study([
        ({"instruction": 0}, 0.6, {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}),  # best on 0, 1
        ({"instruction": 1}, 0.5, {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}),  # best on 2
        ({"instruction": 2}, 0.4, {0: 1.0, 1: 0.0, 2: 0.0, 3: 1.0}),  # best on 0 only: a subset of the first's
        ({"instruction": 3}, 0.3, {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}),  # the first's wins, lower value
        ({"instruction": 0}, 0.6, {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}),  # the first candidate again
    ])
    front = pareto_front(_ctx(study))
    assert [(m.trial.number, sorted(m.wins)) for m in front] == [(0, [0, 1]), (1, [2])]  # step 3: all tie
    rng = random.Random(0)
    drawn = [choose_parent(front, rng).trial.number for _ in range(300)]
    assert 160 <= drawn.count(0) <= 240 and drawn.count(1) == 300 - drawn.count(0)  # about 2 : 1
    # every candidate ties on every example: no front, the round falls back to the incumbent
    flat = _study([({"instruction": i}, 0.5, {0: 1.0, 1: 0.0}) for i in range(3)])
    assert pareto_front(_ctx(flat)) == [] and choose_parent([], rng) is None


def test_a_merge_that_beats_both_members_goes_to_the_slot_after_the_next():
    from types import SimpleNamespace

    from optimizer.run.reflect import _merge, pareto_front

    study = _study([({"instruction": 0, "demo_set": 0, "n_demos": 2}, 0.6, {0: 1.0, 1: 0.0}),
                    ({"instruction": 1, "demo_set": 1, "n_demos": 2}, 0.5, {0: 0.0, 1: 1.0})], waiting=[3, 4, 5])

    class Ev:  # instruction 0 with demo set 1 answers everything; each member alone half
        def evaluate(self, cand, mini):
            good = cand.instruction == "instruction 0" and cand.demos[0].id.startswith("d1:")
            return SimpleNamespace(mean=1.0 if good else 0.5)
    ctx = _ctx(study, evaluator=Ev(), n_trials=6, task=SimpleNamespace(optimizer=SimpleNamespace(reflect=1)))
    a, b = pareto_front(ctx)
    rec = _merge(ctx, 3, a, b, mini=[])  # the round before slot 3 of 6 (one round: the shares 0-2, 3-5)
    assert rec["accepted"] and rec["slot"] == 4 and rec["child_score"] == 1.0 and rec["member_scores"] == [0.5, 0.5]
    assert rec["params"] == {"instruction": 0, "demo_set": 1, "n_demos": 2}
    (slot4,) = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("optimizer:slot") == 4]
    assert slot4.system_attrs["fixed_params"] == rec["params"]
    # slot 3 is the last of its share: no slot is left for the merge
    ctx.n_trials = 4
    assert _merge(ctx, 3, a, b, mini=[])["reason"] == "no waiting slot left in this share"
    # a merge that gains nothing is turned down; members sharing their demos are not merged
    Ev.evaluate = lambda self, cand, mini: SimpleNamespace(mean=0.5)
    assert _merge(ctx, 3, a, b, mini=[])["reason"] == "does not beat both front members on the minibatch"
    same = _study([({"instruction": 0, "demo_set": 0, "n_demos": 2}, 0.6, {0: 1.0, 1: 0.0}),
                   ({"instruction": 1, "demo_set": 0, "n_demos": 2}, 0.5, {0: 0.0, 1: 1.0})])
    c, d = pareto_front(_ctx(same))
    assert not _merge(_ctx(same), 2, c, d, mini=[])["tried"]


def test_the_merge_pair_is_the_highest_ranked_pair_differing_in_instruction_and_demos():
    from optimizer.run.reflect import merge_pair, pareto_front

    study = _study([({"instruction": 0, "demo_set": 0, "n_demos": 2}, 0.7, {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}),
                    ({"instruction": 0, "demo_set": 1, "n_demos": 2}, 0.6, {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0}),
                    ({"instruction": 1, "demo_set": 1, "n_demos": 2}, 0.5, {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0})])
    front = pareto_front(_ctx(study))
    assert [m.trial.number for m in front] == [0, 1, 2]
    a, b = merge_pair(front)  # 0 and 1 share the instruction; 0 and 2 differ in both
    assert (a.trial.number, b.trial.number) == (0, 2)
    assert merge_pair(front[:2]) is None
