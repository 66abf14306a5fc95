"""Racing: the pruners that stop a trial early, and the validation order and weights they compare on.

Each trial walks the validation examples in a seeded per-trial order and reports every example's score
under the example's index, so that Optuna's ``WilcoxonPruner`` compares it *paired* with the best trial
on the same examples and stops it as soon as it is significantly worse. With ``racing: halving`` every
trial walks one shared order instead (label-stratified for classification) and ``PairedHalvingPruner``
runs successive halving on it: at rungs of min_examples * rate**j examples a trial goes on only when its
mean is among the best 1/rate of all trials' means on the same examples."""

from __future__ import annotations

import collections
import math
import random
import warnings

import optuna
from optuna.trial import TrialState

from ..data import Example, proportional_order
from .sampling import SlotStablePruner


class PairedHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving on shared examples (asynchronous, as in ASHA), paired.

    Every trial walks the validation split in the same order and reports example ``k`` of that order at
    step ``k``, so two trials that reached step ``r`` were scored on the same ``r`` examples. At each rung
    ``r = min_examples * rate**j`` the trial's mean over its first ``r`` examples is ranked against the
    means of every other trial on those same examples; it goes on only when it is among the best
    ``ceil(m / rate)`` of the ``m`` trials there (ties go on). Losers cost ``min_examples`` calls, and the
    examples past each rung go only to contenders."""

    def __init__(self, min_examples: int, rate: int = 2):
        self.min_examples = max(1, int(min_examples))
        self.rate = max(2, int(rate))

    def rung(self, r: int) -> bool:
        k = self.min_examples
        while k < r:
            k *= self.rate
        return k == r

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        mine = trial.intermediate_values  # a failed call leaves its step out: compare on the steps reported
        r = len(mine)
        if not self.rung(r):
            return False
        means = [sum(mine.values()) / r]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            if t.number == trial.number:
                continue
            vals = t.intermediate_values
            if all(k in vals for k in mine):
                means.append(sum(vals[k] for k in mine) / r)
        keep = max(1, math.ceil(len(means) / self.rate))
        threshold = sorted(means, reverse=True)[keep - 1]
        return means[0] < threshold - 1e-12


def shared_validation_order(validation: list[Example], seed: int, *, stratify: bool = False) -> list[int]:
    """The one order in which every trial of a halving study walks the validation split (seeded).

    With ``stratify`` (classification), each label's examples are shuffled and interleaved so that every
    prefix holds each label in about its share of the split: a rung compares trials on the first r
    examples, and a prefix that happens to be mostly one label would favour the candidates that answer
    that label and cut the rest."""
    if not stratify:
        order = list(range(len(validation)))
        random.Random(f"{seed}:validation").shuffle(order)
        return order
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(validation):
        groups.setdefault(e.output, []).append(i)
    for label, idx in groups.items():
        random.Random(f"{seed}:validation:{label}").shuffle(idx)
    flat = [(label, i) for label, idx in groups.items() for i in idx]
    return [flat[j][1] for j in proportional_order([label for label, _ in flat])]


def balanced_weights(validation: list[Example]) -> list[float]:
    """Per-example weights whose weighted mean is the label-balanced mean: an example of label y weighs
    n / (K * n_y) (n examples, K labels present), so each label's examples carry 1/K of the total and the
    weights average 1 over the split."""
    counts = collections.Counter(e.output for e in validation)
    n, k = len(validation), len(counts)
    return [n / (k * counts[e.output]) for e in validation]


def make_pruner(prune: bool, prune_p: float, min_examples: int, racing: str = "wilcoxon",
                rate: int = 2) -> optuna.pruners.BasePruner:
    if not prune:
        return optuna.pruners.NopPruner()
    if racing == "halving":
        return SlotStablePruner(PairedHalvingPruner(min_examples, rate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SlotStablePruner(optuna.pruners.WilcoxonPruner(p_threshold=prune_p, n_startup_steps=min_examples))
