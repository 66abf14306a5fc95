"""Demo selectors: where candidate few-shot demo sets come from.

``DemoSelector.select(ctx, n_sets, size)`` returns ``n_sets`` ordered demo sets
of up to ``size`` training examples. A trial uses the first ``n_demos`` of a
set, so every set is ordered to be good as a prefix: labels interleaved.

- ``random``: labeled examples drawn at random, label-stratified.
- ``bootstrap``: a teacher program (seed instruction with random labeled demos)
  runs on training examples; those whose output passes the metric become demos
  (with the teacher's reasoning, for chain of thought).
- ``diverse``: TF-IDF vectors of the inputs clustered with k-means; one example
  per cluster (the most central for the first set, random members after).
- ``knn``: not a fixed set but a pool (the labeled training examples, up to
  ``pool`` of them, label-stratified): a trial with ``n_demos = k`` gives each
  input its k most similar pool examples by TF-IDF cosine (KATE), retrieved at
  call time (``Evaluator.demos_for``).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .examples import Example, interleave, label_groups, round_robin, stratified_sample
from .plugins import SELECTORS


@dataclass
class SelectionContext:
    train: list[Example]
    seed: int
    labels: list[str] | None = None
    evaluator: Any = None  # optimizer.evaluate.Evaluator, for bootstrap
    instruction: str = ""
    budget: int = 48  # train examples the bootstrap teacher may run on
    notes: dict[str, Any] = field(default_factory=dict)


class DemoSelector(ABC):
    """Base of every selector, registered in ``optimizer.plugins.SELECTORS``. What a selector does, for
    the pool and the search, is said by its capabilities (class attributes), never by its name."""

    #: registry name ("random", "bootstrap", ...)
    name: str = ""
    #: ``select`` runs the task LM (through ``ctx.evaluator``): ``demo_pool`` reserves its sets as
    #: placeholders that ``fill_pool`` fills after the trials that need none of them; the other
    #: selectors are pure functions of the training data and the seed
    makes_lm_calls: bool = False
    #: ``select`` returns one pool, not demo sets: a trial with ``n_demos = k`` gives each input its k
    #: nearest pool examples, retrieved at call time (``Candidate.knn``); the pool may exceed ``size``
    per_input: bool = False

    @abstractmethod
    def select(self, ctx: SelectionContext, n_sets: int, size: int) -> list[list[Example]]:
        """n_sets ordered demo sets of at most `size` examples, deterministic for ctx.seed."""

    @classmethod
    def planned_runs(cls, ctx: SelectionContext, size: int) -> list[tuple[Any, Example]]:
        """The (``Candidate``, example) runs of the task LM that ``select`` makes at most, for a plan's
        estimate before any call (the first examples stand in for drawn ones); none for data-only ones."""
        return []

    @classmethod
    def planned_calls(cls, ctx: SelectionContext, size: int) -> int:
        """The LM calls ``select`` makes at most (a budget reserves them before it runs)."""
        return len(cls.planned_runs(ctx, size))

    @classmethod
    def scored_examples(cls, ctx: SelectionContext, size: int) -> set[str]:
        """Ids of the training examples ``select`` answers or scores with the LM (a superset, no LM call):
        selection has seen them, so the confirmation sample leaves them out. None for data-only ones."""
        return set()


class RandomSelector(DemoSelector):
    name = "random"

    def select(self, ctx: SelectionContext, n_sets: int, size: int) -> list[list[Example]]:
        by_label = bool(ctx.labels)
        return [stratified_sample(ctx.train, size, random.Random(f"{ctx.seed}:random:{i}"), by_label)
                for i in range(n_sets)]


class BootstrapSelector(DemoSelector):
    name = "bootstrap"
    makes_lm_calls = True

    @staticmethod
    def teacher_size(size: int) -> int:
        return max(1, min(4, size))

    @classmethod
    def planned_runs(cls, ctx: SelectionContext, size: int) -> list[tuple[Any, Example]]:
        from .program import Candidate

        teacher = Candidate(ctx.instruction, tuple(ctx.train[: cls.teacher_size(size)]), {})
        return [(teacher, ex) for ex in ctx.train[len(teacher.demos):][: ctx.budget]]

    @classmethod
    def planned_calls(cls, ctx: SelectionContext, size: int) -> int:
        """The LM calls ``select`` makes: one per training example it runs the teacher on."""
        return min(ctx.budget, max(0, len(ctx.train) - min(cls.teacher_size(size), len(ctx.train))))

    @classmethod
    def _draw(cls, ctx: SelectionContext, size: int) -> tuple[list[Example], list[Example]]:
        """The teacher's demos and the training examples it runs on (seeded; no LM call)."""
        rng = random.Random(f"{ctx.seed}:bootstrap")
        teacher_demos = stratified_sample(ctx.train, cls.teacher_size(size), rng, bool(ctx.labels))
        taken = {e.id for e in teacher_demos}
        rest = [e for e in ctx.train if e.id not in taken]
        rng.shuffle(rest)
        return teacher_demos, rest[: ctx.budget]

    @classmethod
    def scored_examples(cls, ctx: SelectionContext, size: int) -> set[str]:
        teacher_demos, runs = cls._draw(ctx, size)
        return {e.id for e in teacher_demos} | {e.id for e in runs}

    def select(self, ctx: SelectionContext, n_sets: int, size: int) -> list[list[Example]]:
        from .program import Candidate

        if ctx.evaluator is None or n_sets <= 0:
            return []
        by_label = bool(ctx.labels)
        teacher_demos, to_run = self._draw(ctx, size)
        teacher = Candidate(ctx.instruction, tuple(teacher_demos), {"role": "bootstrap-teacher"})
        passed: list[Example] = []
        runs = 0
        for ex in to_run:
            out = ctx.evaluator.run_one(teacher, ex)
            runs += 1
            if out.score >= 1.0:
                rationale = out.prediction.get("reasoning") or ex.rationale
                passed.append(Example(ex.id, ex.inputs, ex.output, rationale))
        ctx.notes["bootstrap_runs"] = runs
        ctx.notes["bootstrap_passed"] = len(passed)
        if len(passed) < max(2, size // 2):
            return []  # too few traces to form sets; other selectors fill the pool
        return [stratified_sample(passed, size, random.Random(f"{ctx.seed}:bootstrap:{i}"), by_label)
                for i in range(n_sets)]


class DiverseSelector(DemoSelector):
    name = "diverse"

    def select(self, ctx: SelectionContext, n_sets: int, size: int) -> list[list[Example]]:
        import numpy as np
        from sklearn.cluster import KMeans
        from sklearn.feature_extraction.text import TfidfVectorizer

        if n_sets <= 0 or len(ctx.train) < 2:
            return []
        k = max(1, min(size, len(ctx.train)))
        texts = [" ".join(e.inputs.values()) for e in ctx.train]
        x = TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(texts)
        km = KMeans(n_clusters=k, random_state=ctx.seed, n_init=4).fit(x)
        dist = km.transform(x)
        clusters: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(km.labels_):
            clusters[int(c)].append(i)
        sets = []
        for s in range(n_sets):
            rng = random.Random(f"{ctx.seed}:diverse:{s}")
            chosen = []
            for c in sorted(clusters):
                members = clusters[c]
                if s == 0:
                    chosen.append(ctx.train[min(members, key=lambda i: (dist[i, c], i))])
                else:
                    chosen.append(ctx.train[rng.choice(members)])
            sets.append(interleave(chosen, rng, bool(ctx.labels))[:size])
        del np
        return sets


class KnnSelector(DemoSelector):
    """One pool of labeled examples for per-input retrieval."""

    name = "knn"
    per_input = True

    def __init__(self, pool: int = 200):
        self.pool = pool

    def select(self, ctx: SelectionContext, n_sets: int, size: int) -> list[list[Example]]:
        if n_sets <= 0 or not ctx.train:
            return []
        rng = random.Random(f"{ctx.seed}:knn")
        if len(ctx.train) <= self.pool:
            return [list(ctx.train)]
        if ctx.labels:
            keys, groups = label_groups(ctx.train, rng)
            chosen = round_robin(keys, groups, self.pool)
        else:
            chosen = rng.sample(ctx.train, self.pool)
        order = {e.id: i for i, e in enumerate(ctx.train)}
        return [sorted(chosen, key=lambda e: order[e.id])]


def demo_pool(ctx: SelectionContext, n_sets: int, size: int, kinds: list[str], *,
              later: bool = False) -> list[tuple[str, list[Example]]]:
    """n_sets demo sets shared out among the selectors, in the selectors' order. A data-only selector
    that finds fewer sets than its share (a kNN pool is one set) leaves room to random sets after the last
    selector's; an LM-calling one (bootstrap) keeps its share's indices, filled by random sets where it
    finds none, so that every other set's index is known before it runs. With ``later`` its sets are
    empty placeholders (``(kind, [])``) that ``fill_pool`` fills once the trials that need none of them
    have run (the start trials run before the bootstrap teacher); the filled pool is the one
    ``later=False`` returns."""
    if size <= 0 or not kinds:
        return []
    share = {k: n_sets // len(kinds) + (1 if i < n_sets % len(kinds) else 0) for i, k in enumerate(kinds)}
    out: list[tuple[str, list[Example]]] = []
    for kind in kinds:
        selector = SELECTORS.get(kind)
        if selector.makes_lm_calls:
            out += [(kind, [])] * share[kind]
        else:
            out += [(kind, s) for s in selector().select(ctx, share[kind], size) if s]
    missing = n_sets - len(out)
    if missing > 0:
        out += [("random", s) for s in _spare_sets(ctx, missing, size)]
    # drop exact duplicates (placeholders stay, for fill_pool)
    seen: set[tuple[str, ...]] = set()
    unique = []
    for kind, s in out:
        key = tuple(e.id for e in s)
        if not s or key not in seen:
            seen.add(key)
            unique.append((kind, s))
    return unique if later else fill_pool(ctx, unique, size)


def fill_pool(ctx: SelectionContext, pool: list[tuple[str, list[Example]]], size: int
              ) -> list[tuple[str, list[Example]]]:
    """``pool`` with its placeholders (the empty sets ``demo_pool`` reserves for LM-calling selectors)
    filled, each at its own index: by its selector, or, where that finds fewer sets or one already in
    the pool, by random sets that are nowhere else in it."""
    holes = [i for i, (_, s) in enumerate(pool) if not s]
    out = list(pool)
    taken = {tuple(e.id for e in s) for _, s in out if s}
    for kind in dict.fromkeys(out[i][0] for i in holes):
        mine = [i for i in holes if out[i][0] == kind]
        for i, s in zip(mine, [s for s in SELECTORS.get(kind)().select(ctx, len(mine), size) if s]):
            if tuple(e.id for e in s) not in taken:
                out[i] = (kind, s)
                taken.add(tuple(e.id for e in s))
    empty = [i for i in holes if not out[i][1]]
    if empty:  # the first spare sets are in the pool already (demo_pool's missing ones): skip what is taken
        spare = _spare_sets(ctx, len(out) + len(empty), size)
        fresh = (s for s in spare if tuple(e.id for e in s) not in taken)
        for i in empty:  # too little data for fresh sets: a repeated one keeps the indices
            s = next(fresh, None) or (spare[0] if spare else None)
            if s is not None:
                out[i] = ("random", s)
                taken.add(tuple(e.id for e in s))
    return [(k, s) for k, s in out if s]  # no set at all only without training data


def _spare_sets(ctx: SelectionContext, n: int, size: int) -> list[list[Example]]:
    """The random sets that fill room other selectors leave, the same first ones for every n."""
    return [s for s in RandomSelector().select(SelectionContext(ctx.train, ctx.seed + 7919, ctx.labels), n, size) if s]
