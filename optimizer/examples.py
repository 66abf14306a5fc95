"""An example, the unit of data every part shares, and label-stratified sampling of examples.

Split making (``optimizer.data``), demo selectors (``optimizer.selectors``) and
programs (``optimizer.program``) all use these; this module imports none of them.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One labeled example: input field values, the verbalised output, optional rationale."""

    id: str
    inputs: dict[str, str]
    output: str
    rationale: str | None = None
    # a program of steps: intermediate fields' values, from the data (a step output's ``column``) or from a
    # trace of the program that scored well (``optimizer.steps``)
    extras: dict[str, str] = field(default_factory=dict, compare=False)

    def key(self) -> str:
        """Identity for leakage checks: normalised input text."""
        text = "\x1f".join(" ".join(str(v).lower().split()) for v in self.inputs.values())
        return hashlib.sha1(text.encode()).hexdigest()

    def to_dict(self, output_name: str) -> dict[str, str]:
        d = {**self.inputs, **self.extras}
        d[output_name] = self.output
        if self.rationale:
            d["reasoning"] = self.rationale
        return d


def label_groups(examples: list[Example], rng: random.Random) -> tuple[list[str], dict[str, list[Example]]]:
    """Examples grouped by label, labels and members shuffled."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.output].append(e)
    keys = sorted(groups)
    rng.shuffle(keys)
    for k in keys:
        rng.shuffle(groups[k])
    return keys, groups


def round_robin(keys: list[str], groups: dict[str, list[Example]], limit: int) -> list[Example]:
    out: list[Example] = []
    while len(out) < limit and any(groups[k] for k in keys):
        for k in keys:
            if groups[k] and len(out) < limit:
                out.append(groups[k].pop())
    return out


def interleave(examples: list[Example], rng: random.Random, by_label: bool) -> list[Example]:
    """Order so that every prefix is as label-balanced as possible."""
    if not by_label:
        out = list(examples)
        rng.shuffle(out)
        return out
    keys, groups = label_groups(examples, rng)
    return round_robin(keys, groups, len(examples))


def stratified_sample(pool: list[Example], size: int, rng: random.Random, by_label: bool) -> list[Example]:
    if not by_label:
        return rng.sample(pool, min(size, len(pool)))
    return interleave(pool, rng, True)[:size] if len(pool) <= size else interleave(
        _balanced_draw(pool, size, rng), rng, True)


def _balanced_draw(pool: list[Example], size: int, rng: random.Random) -> list[Example]:
    keys, groups = label_groups(pool, rng)
    return round_robin(keys, groups, size)
