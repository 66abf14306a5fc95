"""Every demo selector registered in ``optimizer.plugins.SELECTORS`` meets the same contract, checked on
scripted data (no LM: a selector that makes LM calls gets a counting stand-in for the evaluator).

The contract: sets of training examples, no repeats within a set, at most ``n_sets`` sets of at most ``size``
(a ``per_input`` selector: one pool), the same sets for the same seed, no LM call unless ``makes_lm_calls``
and never more than ``planned_calls``, nothing without data, and in ``demo_pool`` placeholders exactly for the
selectors that make LM calls. ``test_a_new_selector_is_one_class_and_its_registration`` registers a toy
selector and runs the same checks on it."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from optimizer.data import Example
from optimizer.errors import ConfigError
from optimizer.plugins import SELECTORS
from optimizer.selectors import DemoSelector, SelectionContext, demo_pool, fill_pool
from optimizer.task import task_from_dict

LABELS = ["negative", "positive", "neutral"]
WORDS = "film plot actor scene story music ending camera script cast pace humour".split()


def train_examples(n: int = 36) -> list[Example]:
    rng = random.Random(7)
    return [Example(f"train:{i}", {"text": " ".join(rng.sample(WORDS, 4)) + f" {i}"}, LABELS[i % 3]) for i in range(n)]


class CountingEvaluator:
    """Stands in for ``Evaluator.run_one``: a teacher run passes for two examples in three."""

    def __init__(self):
        self.calls = 0
        self.seen: set[str] = set()

    def run_one(self, candidate, example):
        self.calls += 1
        self.seen.add(example.id)
        return SimpleNamespace(score=float(int(example.id.split(":")[1]) % 3 != 0), prediction={})


def context(seed: int = 0, labeled: bool = True, train: list[Example] | None = None) -> SelectionContext:
    return SelectionContext(train_examples() if train is None else train, seed, labels=LABELS if labeled else None,
                            evaluator=CountingEvaluator(), instruction="Label the text.", budget=12)


def ids(sets):
    return [[e.id for e in s] for s in sets]


# ------------------------------------------------------------------------------------------ the checks

def check_capabilities(cls: type[DemoSelector]) -> None:
    assert issubclass(cls, DemoSelector)
    assert isinstance(cls.makes_lm_calls, bool) and isinstance(cls.per_input, bool)


def check_sets_are_training_examples_within_bounds(cls: type[DemoSelector]) -> None:
    for labeled in (True, False):
        for n_sets, size in ((3, 4), (1, 2), (5, 8)):
            ctx = context(1, labeled)
            train = {e.id: e for e in ctx.train}
            sets = cls().select(ctx, n_sets, size)
            assert isinstance(sets, list) and len(sets) <= (1 if cls.per_input else n_sets)
            for s in sets:
                assert isinstance(s, list) and all(isinstance(e, Example) for e in s)
                assert all(e.id in train and e.inputs == train[e.id].inputs and e.output == train[e.id].output
                           for e in s)
                assert len({e.id for e in s}) == len(s)  # no example twice in a set
                if not cls.per_input:
                    assert len(s) <= size


def check_same_sets_for_the_same_seed(cls: type[DemoSelector]) -> None:
    a = cls().select(context(3), 3, 4)
    b = cls().select(context(3), 3, 4)
    assert ids(a) == ids(b)


def check_lm_calls_only_when_said_and_as_planned(cls: type[DemoSelector]) -> None:
    ctx = context(2)
    planned = cls.planned_calls(ctx, 4)
    assert planned == len(cls.planned_runs(ctx, 4))
    cls().select(ctx, 3, 4)
    if not cls.makes_lm_calls:
        assert ctx.evaluator.calls == 0 and planned == 0
    assert ctx.evaluator.calls <= planned
    # what it ran the LM on is declared (the confirmation sample leaves those examples out)
    declared = cls.scored_examples(ctx, 4)
    assert ctx.evaluator.seen <= declared <= {e.id for e in ctx.train}


def check_nothing_without_data(cls: type[DemoSelector]) -> None:
    assert cls().select(context(0), 0, 4) == []
    assert all(not s for s in cls().select(context(0, train=[]), 3, 4))


def check_demo_pool_places_it(cls: type[DemoSelector]) -> None:
    """In the shared pool: placeholders (filled later) exactly for a selector that makes LM calls, and a
    filled pool of non-empty sets, as many as asked for."""
    name = cls.name
    ctx = context(4)
    pending = demo_pool(ctx, 4, 4, [name], later=True)
    assert any(not s for _, s in pending) == cls.makes_lm_calls
    filled = fill_pool(ctx, pending, 4)
    assert filled and all(s for _, s in filled) and len(filled) <= 4
    assert {k for k, _ in filled} <= {name, "random"}  # room it leaves is filled by random sets


CHECKS = [check_capabilities, check_sets_are_training_examples_within_bounds, check_same_sets_for_the_same_seed,
          check_lm_calls_only_when_said_and_as_planned, check_nothing_without_data, check_demo_pool_places_it]


@pytest.mark.parametrize("name", SELECTORS.names())
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__[len("check_"):])
def test_contract(name, check):
    cls = SELECTORS.get(name)
    assert cls.name == name
    check(cls)


# ------------------------------------------------------------------------------ adding a selector

class StrideSelector(DemoSelector):
    """A selector in one class: every k-th training example, from offset i for set i."""

    name = "stride"

    def select(self, ctx, n_sets, size):
        if n_sets <= 0 or not ctx.train:
            return []
        k = max(1, len(ctx.train) // max(1, size))
        return [ctx.train[(i + ctx.seed) % k::k][:size] for i in range(n_sets)]


@pytest.fixture
def stride_selector():
    with SELECTORS.temporarily("stride", StrideSelector) as cls:
        yield cls


def task_dict(**optimizer):
    return {"task": "t", "dataset": {"files": {"train": "x.jsonl"}},
            "splits": {"train": {"from": "train"}, "validation": {"from": "train"}, "test": {"from": "train"}},
            "inputs": [{"name": "text"}], "output": {"name": "label"}, "instruction": "Label the text.",
            "metric": "exact_match", "optimizer": optimizer}


def test_a_new_selector_is_one_class_and_its_registration(stride_selector):
    for check in CHECKS:
        check(stride_selector)
    assert task_from_dict(task_dict(selectors=["random", "stride"])).optimizer.selectors == ["random", "stride"]
    pool = demo_pool(context(0), 4, 3, ["random", "stride"])
    assert [k for k, _ in pool] == ["random", "random", "stride", "stride"]


def test_an_unregistered_selector_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"optimizer\.selectors\.1: invalid value 'stride' \(fix: use one of "
                                          r"'random', 'bootstrap', 'diverse' or 'knn'\)"):
        task_from_dict(task_dict(selectors=["random", "stride"]))
    with pytest.raises(ConfigError, match="unknown demo selector 'stride'"):
        SELECTORS.get("stride")


def test_a_broken_selector_fails_the_checks(stride_selector):
    """The checks can fail: a selector that repeats examples, ignores the seed or calls the LM unannounced."""

    class Repeats(StrideSelector):
        def select(self, ctx, n_sets, size):
            return [[ctx.train[0]] * min(2, size) for _ in range(n_sets)] if ctx.train and n_sets else []

    class Unseeded(StrideSelector):
        def select(self, ctx, n_sets, size):
            return [random.sample(ctx.train, min(size, len(ctx.train))) for _ in range(n_sets)]

    class Sneaky(StrideSelector):
        def select(self, ctx, n_sets, size):
            ctx.evaluator.run_one(None, ctx.train[0])
            return super().select(ctx, n_sets, size)

    for broken, check in ((Repeats, check_sets_are_training_examples_within_bounds),
                          (Unseeded, check_same_sets_for_the_same_seed),
                          (Sneaky, check_lm_calls_only_when_said_and_as_planned)):
        with pytest.raises(AssertionError):
            check(broken)
