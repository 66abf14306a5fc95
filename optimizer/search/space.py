"""The candidate space of a study: instruction (index into the instruction pool), demo set (index into the
demo pool), number of demos (a prefix of the set), demo order and scoring; the fixed first slots (the seed
prompt and the ``start`` trials) and the description the study stores so that every worker reads the
same space."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import optuna

from ..data import Example
from ..errors import ConfigError
from ..plugins import SELECTORS
from ..program import Candidate
from ..scoring import LABEL_READOUTS, offsets_from_json
from .attrs import ATTR


@dataclass
class SearchSpace:
    instructions: list[tuple[str, str]]  # (text, origin)
    demo_sets: list[tuple[str, list[Example]]]  # (selector, ordered examples)
    max_demos: int
    scorings: list[str] = dataclasses.field(default_factory=lambda: ["generate"])
    orders: int = 1  # demo orders tried per demo prefix: 0 = as selected, k > 0 = a permutation seeded by k
    # the first trial, which every later one races against: "seed" (the seed prompt) or "demos" (the seed
    # instruction with the first fixed demo set's first start_demos demos; the seed prompt then runs as slot 1)
    # or "knn" (the same with each input's start_demos nearest pool demos, when a kNN pool is among the sets)
    # or "demos+knn" (both: the fixed set first, the kNN pool second, then the seed prompt)
    start: str = "seed"
    start_demos: int | None = None  # None: max_demos (studies described before this field started with 4)
    # label readouts read jointly: a trial scores its prompt under every scoring from the same responses and
    # keeps the better one (no scoring parameter); only when every scoring is a label readout
    joint: bool = False

    @property
    def joint_readouts(self) -> bool:
        return self.joint and len(self.scorings) > 1 and all(s in LABEL_READOUTS for s in self.scorings)

    def candidate(self, instruction: int, demo_set: int, n_demos: int, scoring: str | None = None,
                  order: int = 0) -> Candidate:
        text, origin = self.instructions[instruction]
        demos: tuple[Example, ...] = ()
        selector = None
        knn = 0
        if n_demos > 0 and self.demo_sets:
            selector, exs = self.demo_sets[demo_set]
            if SELECTORS.get(selector).per_input:  # the set is a pool: each input gets its n_demos nearest demos
                demos, knn, order = tuple(exs), min(n_demos, len(exs)), 0
            else:
                demos = tuple(exs[:n_demos])
            if order and len(demos) > 1:
                perm = list(demos)
                random.Random(f"order:{order}:{len(perm)}").shuffle(perm)
                demos = tuple(perm)
        scoring = scoring or self.scorings[0]
        return Candidate(text, demos, {"instruction": instruction, "instruction_origin": origin,
                                       "demo_set": demo_set if demos else None, "demo_selector": selector,
                                       "n_demos": knn or len(demos), "order": order if len(demos) > 1 else 0,
                                       "scoring": scoring}, scoring=scoring, knn=knn)

    def seed_candidate(self) -> Candidate:
        """The seed prompt: the seed instruction, no demos, generated text."""
        return self.candidate(0, 0, 0, "generate")

    def suggest(self, trial: optuna.Trial, prefix: str = "") -> Candidate:
        """The trial's candidate as the sampler proposes it (a fixed slot's parameters come back as
        enqueued); ``prefix`` names the parameters of one step of a program (``optimizer.steps``)."""
        i = trial.suggest_int(prefix + "instruction", 0, len(self.instructions) - 1)
        d = k = o = 0
        if self.has_demos:
            d = trial.suggest_int(prefix + "demo_set", 0, len(self.demo_sets) - 1)
            k = trial.suggest_int(prefix + "n_demos", 0, self.max_demos)
            if self.orders > 1:  # always suggested (no conditional space); ignored below 2 demos
                o = trial.suggest_int(prefix + "order", 0, self.orders - 1)
        sc = (trial.suggest_categorical(prefix + "scoring", self.scorings)
              if len(self.scorings) > 1 and not self.joint_readouts else None)
        return self.candidate(i, d, k, sc, o)

    def of_params(self, p: dict[str, Any], readout: str | None = None) -> Candidate:
        """The candidate of a trial's parameters (``readout``: the scoring a joint-readout trial kept)."""
        return self.candidate(p["instruction"], p.get("demo_set", 0), p.get("n_demos", 0),
                              readout or p.get("scoring"), p.get("order", 0))

    def of_trial(self, t: optuna.trial.FrozenTrial) -> Candidate:
        cand = self.of_params(t.params, t.user_attrs.get(ATTR + "readout"))
        offsets = t.user_attrs.get(ATTR + "offsets")
        return dataclasses.replace(cand, offsets=offsets_from_json(offsets)) if offsets else cand

    def describe(self) -> dict[str, Any]:
        return {"instructions": [{"index": i, "origin": o, "text": t} for i, (t, o) in enumerate(self.instructions)],
                "demo_sets": [{"index": i, "selector": s, "ids": [e.id for e in exs]}
                              for i, (s, exs) in enumerate(self.demo_sets)],
                "max_demos": self.max_demos, "scorings": list(self.scorings), "orders": self.orders,
                "start": self.start, "start_demos": self.start_demos or self.max_demos, "joint": self.joint}

    @property
    def has_demos(self) -> bool:
        return bool(self.demo_sets) and self.max_demos > 0

    def seed_params(self) -> dict[str, Any]:
        """The seed prompt: instruction 0, no demos, the first scoring (always slot 0)."""
        p: dict[str, Any] = {"instruction": 0}
        if self.has_demos:
            p.update(demo_set=0, n_demos=0)
        if len(self.scorings) > 1 and not self.joint_readouts:
            p["scoring"] = self.scorings[0]
        if self.has_demos and self.orders > 1:
            p["order"] = 0
        return p

    def start_params(self, start: str | None = None) -> dict[str, Any] | None:
        """A strong first incumbent for small models: the seed instruction with ``start_demos`` demos
        (default: max_demos, the whole set) of the first fixed (non-kNN) demo set (None: there is
        none). Racing prunes later trials against the first complete one, so a weak first trial (a
        zero-shot seed that a base model cannot answer) costs a whole validation pass and prunes
        nothing; and such a model gains most from more demos (SST-2, embedded model, the same random
        set on 100 validation sentences: 0.85 with its first 4 demos, 0.89 with all 8). ``start: knn``
        takes the kNN pool instead, when there is one (``start`` names either; default: this space's)."""
        if not self.has_demos:
            return None
        fixed = next((i for i, (sel, exs) in enumerate(self.demo_sets) if not SELECTORS.get(sel).per_input and exs), None)
        if (start or self.start) == "knn":  # per-input demos (the kNN pool) when there is one
            fixed = next((i for i, (sel, exs) in enumerate(self.demo_sets) if SELECTORS.get(sel).per_input and exs), fixed)
        if fixed is None:
            return None
        return {**self.seed_params(), "demo_set": fixed,
                "n_demos": min(self.start_demos or self.max_demos, self.max_demos, len(self.demo_sets[fixed][1]))}

    def fixed_params(self, slot: int) -> dict[str, Any] | None:
        """The parameters of a slot that is not left to the sampler (None: the sampler proposes): the
        ``start`` trials (``demos+knn``: the first fixed set, then the kNN pool), then the seed prompt."""
        order: list[dict[str, Any]] = []
        for p in (self.start_params(k) for k in ([] if self.start == "seed" else self.start.split("+"))):
            if p is not None and p not in order:  # no kNN pool: one start trial, not the same one twice
                order.append(p)
        order.append(self.seed_params())
        return order[slot] if slot < len(order) else None

    def early_slots(self) -> int:
        """How many of the first fixed slots can run while the pool still holds placeholders (the empty
        sets of an LM-calling selector, ``selectors.demo_pool(later=True)``): those whose candidate does
        not use one and would not change once they are filled (the first fixed set is the first non-empty
        non-kNN set, so a placeholder before it would take its place)."""
        pending = [i for i, (_, exs) in enumerate(self.demo_sets) if not exs]
        n = 0
        while (p := self.fixed_params(n)) is not None:
            d, k = p.get("demo_set", 0), p.get("n_demos", 0)
            if k and (d in pending or (not SELECTORS.get(self.demo_sets[d][0]).per_input
                                       and any(i < d for i in pending))):
                break
            n += 1
        return n

    @classmethod
    def from_description(cls, d: dict[str, Any], train: list[Example]) -> "SearchSpace":
        by_id = {e.id: e for e in train}
        sets = []
        for s in d["demo_sets"]:
            missing = [i for i in s["ids"] if i not in by_id]
            if missing:
                raise ConfigError(f"the study was built from other training data (example {missing[0]} is unknown)",
                                  field="--study", fix="use the same task and data as the study, or a new --study")
            sets.append((s["selector"], [by_id[i] for i in s["ids"]]))
        return cls([(i["text"], i["origin"]) for i in d["instructions"]], sets, int(d["max_demos"]),
                   list(d.get("scorings") or ["generate"]), int(d.get("orders", 1)), str(d.get("start", "seed")),
                   int(d.get("start_demos", 4)), bool(d.get("joint", False)))



@dataclass
class ProgramSpace:
    """The space of a program of steps (``optimizer.steps``): one ``SearchSpace`` per step (in the task
    file's order), each step's parameters named ``STEP.instruction``, ``STEP.demo_set``, ``STEP.n_demos``
    and ``STEP.order``. Answers are generated text. The fixed first slots: every step with its first demo
    set (the steps without demos at their seed), then the seed program."""

    names: list[str]
    steps: list[SearchSpace]
    scorings: list[str] = dataclasses.field(default_factory=lambda: ["generate"])
    joint_readouts: bool = False

    @property
    def has_demos(self) -> bool:
        return any(sp.has_demos for sp in self.steps)

    @property
    def demo_sets(self) -> list[tuple[str, list[Example]]]:
        """Every step's demo sets (what a confirmation sample keeps out of)."""
        return [s for sp in self.steps for s in sp.demo_sets]

    def _join(self, steps: list[Candidate]) -> Candidate:
        named = list(zip(self.names, steps))
        origin = {"steps": {n: c.origin for n, c in named}, "n_demos": sum(c.knn or len(c.demos) for c in steps),
                  "scoring": "generate",  # each step's choices in one line, for trial records and the summary
                  "instruction_origin": " ".join(f"{n}:{c.origin.get('instruction_origin')}" for n, c in named),
                  "demo_selector": " ".join(f"{n}:{c.origin.get('demo_selector') or '-'}" for n, c in named)}
        return Candidate("", (), origin, steps=tuple(steps))

    def seed_candidate(self) -> Candidate:
        return self._join([sp.seed_candidate() for sp in self.steps])

    def suggest(self, trial: optuna.Trial, prefix: str = "") -> Candidate:
        return self._join([sp.suggest(trial, f"{prefix}{n}.") for n, sp in zip(self.names, self.steps)])

    def _split(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k[len(n) + 1:]: v for k, v in p.items() if k.startswith(n + ".")} for n in self.names]

    def _merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return {f"{n}.{k}": v for n, p in zip(self.names, parts) for k, v in p.items()}

    def of_params(self, p: dict[str, Any], readout: str | None = None) -> Candidate:
        return self._join([sp.of_params(q) for sp, q in zip(self.steps, self._split(p))])

    def of_trial(self, t: optuna.trial.FrozenTrial) -> Candidate:
        return self.of_params(t.params)

    def seed_params(self) -> dict[str, Any]:
        return self._merge([sp.seed_params() for sp in self.steps])

    def fixed_params(self, slot: int) -> dict[str, Any] | None:
        start = self._merge([sp.start_params("demos") or sp.seed_params() for sp in self.steps])
        order = [start] if start != self.seed_params() else []
        order.append(self.seed_params())
        return order[slot] if slot < len(order) else None

    def early_slots(self) -> int:
        return 0  # a program's demos come from the bootstrap, which runs before any trial

    def describe(self) -> dict[str, Any]:
        """Each step's space, with its demos in full (a step's demos hold fields earlier steps wrote, which
        no training example has)."""
        steps = []
        for n, sp in zip(self.names, self.steps):
            demos = {e.id: {"inputs": e.inputs, "output": e.output, **({"extras": e.extras} if e.extras else {})}
                     for _, exs in sp.demo_sets for e in exs}
            steps.append({"name": n, **sp.describe(), "demos": demos})
        return {"steps": steps, "scorings": list(self.scorings)}

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> "ProgramSpace":
        spaces = []
        for s in d["steps"]:
            pool = [Example(i, dict(v["inputs"]), str(v["output"]), extras=dict(v.get("extras") or {}))
                    for i, v in s["demos"].items()]
            spaces.append(SearchSpace.from_description(s, pool))
        return cls([s["name"] for s in d["steps"]], spaces)


def space_from_description(d: dict[str, Any], train: list[Example]) -> SearchSpace | ProgramSpace:
    """The space a study holds: a program's (``steps``) or one prompt's."""
    return ProgramSpace.from_description(d) if "steps" in d else SearchSpace.from_description(d, train)
