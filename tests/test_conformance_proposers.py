"""Every instruction proposer registered in ``optimizer.plugins.PROPOSERS`` meets the same contract, checked
with scripted LMs (the task LM is ``fakes.ScriptedBackend``, which answers every example right under one of
the writer's drafts; the proposer LM writes on-topic drafts).

The contract: at most ``n`` proposals, each a non-empty instruction other than the seed, no two alike, the
same ones for the same seed, no LM call (proposer or task LM) unless ``makes_lm_calls``, never more proposer
calls than ``planned_calls`` says (where it says), nothing asked nothing given, and a pool share within the
room left. ``test_a_new_proposer_is_one_class_and_its_registration`` registers a toy proposer and runs the
same checks on it."""

from __future__ import annotations

import pytest

from conftest import sst2_task
from fakes import ScriptedBackend
from optimizer.data import make_splits
from optimizer.engine import make_evaluator
from optimizer.errors import ConfigError
from optimizer.lm.base import LMBackend, LMRequest, LMResponse
from optimizer.lm.profiles import LMProfile
from optimizer.plugins import PROPOSERS
from optimizer.proposers import InstructionProposer, Proposal, ProposalContext, instruction_pool
from optimizer.task import task_from_dict

DRAFTS = ["Decide whether the movie review sentiment is positive or negative.",
          "Read the review and label its sentiment as positive or negative.",
          "Judge the overall sentiment of the movie review, positive or negative.",
          "Tell whether the reviewer liked the film, positive or negative sentiment."]


class Writer(LMBackend):
    """A proposer LM that writes on-topic instructions, one per sample index."""

    name = "writer"

    def __init__(self):
        super().__init__(LMProfile(name="writer", backend="local", model="writer"))

    @property
    def model_id(self) -> str:
        return "writer"

    def _generate(self, request: LMRequest) -> LMResponse:
        return LMResponse(text=" " + DRAFTS[request.sample % len(DRAFTS)] + "\n", prompt_tokens=10, completion_tokens=12)


class Heeding(ScriptedBackend):
    """The scripted task LM, except that under one of the writer's drafts it answers every example right (a
    draft that helps: what a reflective proposer's acceptance test looks for)."""

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt or ""
        if any(d in prompt for d in DRAFTS):
            last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
            return LMResponse(text=f" {self.answers.get(last, self.wrong)}\n", prompt_tokens=1, completion_tokens=1)
        return super()._generate(request)


@pytest.fixture(scope="module")
def task_and_train():
    task = sst2_task(train=30, validation=10, test=10)
    return task, make_splits(task).train


def context(task, train, seed=0):
    answers = {e.inputs["sentence"]: e.output for e in train}
    task_lm = Heeding(answers)
    return ProposalContext(task, train, seed, Writer(), evaluator=make_evaluator(task, task_lm.profile, task_lm))


def calls(ctx) -> tuple[int, int]:
    """(proposer-LM calls, task-LM calls) so far."""
    return ctx.lm.usage.calls, ctx.evaluator.backend.usage.calls


# ------------------------------------------------------------------------------------------ the checks

def check_capabilities(cls, task, train) -> None:
    assert issubclass(cls, InstructionProposer)
    assert isinstance(cls.makes_lm_calls, bool) and isinstance(cls.pool_rank, int) and cls.pool_share >= 1
    assert cls.share(0) == 0 and all(1 <= cls.share(room) <= room for room in range(1, 12))


def check_proposals_are_new_distinct_instructions(cls, task, train) -> None:
    for n in (1, 3, 5):
        found = cls().propose(context(task, train), n)
        assert isinstance(found, list) and len(found) <= n
        assert all(isinstance(p, Proposal) and isinstance(p.text, str) and p.text.strip() for p in found)
        assert all(isinstance(p.origin, str) and p.origin for p in found)
        texts = [p.text.strip().lower() for p in found]
        assert len(set(texts)) == len(texts) and task.instruction.strip().lower() not in texts


def check_same_proposals_for_the_same_seed(cls, task, train) -> None:
    a = cls().propose(context(task, train, seed=5), 3)
    b = cls().propose(context(task, train, seed=5), 3)
    assert a == b


def check_lm_calls_only_when_said_and_as_planned(cls, task, train) -> None:
    ctx = context(task, train)
    found = cls().propose(ctx, 3)
    proposer_calls, task_calls = calls(ctx)
    planned = cls.planned_calls(task, train, 3)
    if not cls.makes_lm_calls:
        assert proposer_calls == task_calls == 0 and planned == []
    else:
        assert found, "an LM proposer with a willing LM proposes something"
    if planned is not None:
        assert proposer_calls <= len(planned) and all(isinstance(r, LMRequest) for r in planned)


def check_nothing_asked_nothing_given(cls, task, train) -> None:
    ctx = context(task, train)
    assert cls().propose(ctx, 0) == [] and calls(ctx) == (0, 0)
    assert cls.planned_calls(task, train, 0) in ([], None)


def check_instruction_pool_places_it(cls, task, train) -> None:
    pool = instruction_pool(context(task, train), 4, [cls.name])
    assert pool[0] == Proposal(task.instruction.strip(), "seed") and 1 < len(pool) <= 4
    assert len({p.text.lower() for p in pool}) == len(pool)


CHECKS = [check_capabilities, check_proposals_are_new_distinct_instructions, check_same_proposals_for_the_same_seed,
          check_lm_calls_only_when_said_and_as_planned, check_nothing_asked_nothing_given,
          check_instruction_pool_places_it]


@pytest.mark.parametrize("name", PROPOSERS.names())
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__[len("check_"):])
def test_contract(name, check, task_and_train):
    cls = PROPOSERS.get(name)
    assert cls.name == name
    check(cls, *task_and_train)


# ------------------------------------------------------------------------------ adding a proposer

class PoliteProposer(InstructionProposer):
    """A proposer in one class: the seed instruction with a courteous frame (no LM)."""

    name = "polite"
    pool_rank = 1  # between the LM proposers and the offline operators
    FRAMES = ("Please: {}", "{} Thank you.", "Kindly do this. {}", "{} Be careful.")

    def propose(self, ctx, n):
        seed = ctx.task.instruction.strip()
        return [Proposal(f.format(seed), "polite") for f in self.FRAMES[: max(0, n)]]


@pytest.fixture
def polite_proposer():
    with PROPOSERS.temporarily("polite", PoliteProposer) as cls:
        yield cls


def test_a_new_proposer_is_one_class_and_its_registration(polite_proposer, task_and_train):
    task, train = task_and_train
    for check in CHECKS:
        check(polite_proposer, task, train)
    data = task.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["optimizer"]["proposers"] = ["offline", "polite"]
    assert task_from_dict(data).optimizer.proposers == ["offline", "polite"]
    pool = instruction_pool(context(task, train), 5, ["offline", "polite"])
    assert [p.origin for p in pool][:3] == ["seed", "polite", "polite"]  # its rank puts it before offline


def test_an_unregistered_proposer_is_one_clear_error(task_and_train):
    data = task_and_train[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    data["optimizer"]["proposers"] = ["polite"]
    with pytest.raises(ConfigError, match=r"optimizer\.proposers\.0: invalid value 'polite' \(fix: use one of "
                                          r"'offline', 'lm' or 'reflective'\)"):
        task_from_dict(data)


def test_a_broken_proposer_fails_the_checks(polite_proposer, task_and_train):
    class Echo(PoliteProposer):  # proposes the seed itself
        def propose(self, ctx, n):
            return [Proposal(ctx.task.instruction, "echo")][:n]

    class Sneaky(PoliteProposer):  # calls the LM though it says it does not
        def propose(self, ctx, n):
            ctx.lm.complete(LMRequest(prompt="x", max_tokens=1))
            return super().propose(ctx, n)

    for broken, check in ((Echo, check_proposals_are_new_distinct_instructions),
                          (Sneaky, check_lm_calls_only_when_said_and_as_planned)):
        with pytest.raises(AssertionError):
            check(broken, *task_and_train)


def test_offline_rewrites_name_a_field_by_a_word_not_its_abbreviated_prefix():
    """BBH's fields show as ``Q:``/``A:`` in the prompt; a rewrite reads "the question", not "the q"."""
    from conftest import ROOT
    from optimizer.task import load_task

    nav = load_task(ROOT / "tasks/bbh_navigate/task.yaml")
    texts = [p.text for p in PROPOSERS.get("offline")().operators(nav)]
    assert "Read the question and label its answer as Yes or No." in texts
    assert "Given the question, determine the answer." in texts
    sst2 = [p.text for p in PROPOSERS.get("offline")().operators(sst2_task())]
    assert "Read the review and label its sentiment as negative or positive." in sst2  # a word prefix is kept
