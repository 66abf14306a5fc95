"""Racing: the pruners that stop a trial early, and the validation order and weights they compare on.

Each trial walks the validation examples in a seeded per-trial order and reports every example's score
under the example's index, so that Optuna's ``WilcoxonPruner`` compares it *paired* with the best trial
on the same examples and stops it as soon as it is significantly worse. With ``racing: halving`` every
trial walks one shared order instead (label-stratified for classification) and ``PairedHalvingPruner``
runs successive halving on it: at rungs of min_examples * rate**j examples a trial goes on only when its
mean is among the best 1/rate of all trials' means on the same examples."""

from __future__ import annotations

import collections
import functools
import math
import random
import types
import warnings

import numpy as np
import optuna
import optuna.pruners._wilcoxon
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


class _FastWilcoxon:
    """``scipy.stats`` as Optuna's ``WilcoxonPruner`` sees it, with ``wilcoxon`` answered faster and alike.

    The pruner tests every step of every trial. With 0/1 scores the differences have ties and zeros, and
    scipy (1.15 and later) answers up to 13 such pairs with an exact permutation test over all 2**n sign
    flips, about a second a call on this machine's cores. Flipping signs leaves the ranks of |d| as they
    are, so the null distribution of the statistic (the rank sum of the positive differences plus half the
    zeros' ranks, "zsplit") is that of a sum of a random subset of the nonzero ranks: counted here exactly
    over the doubled (integer) ranks, and divided as scipy divides, so the p-value is the same float. Every
    other case goes to scipy as before; repeated inputs are memoized (the test is a function of the
    multiset of differences)."""

    def __init__(self, stats):
        self._stats = stats

    def __getattr__(self, name: str):
        return getattr(self._stats, name)

    def wilcoxon(self, x, **kwargs):
        return self._cached(tuple(sorted(float(v) for v in x)), tuple(sorted(kwargs.items())))

    @functools.lru_cache(maxsize=65536)
    def _cached(self, diffs: tuple[float, ...], kwargs: tuple):
        opts = dict(kwargs)
        p = _permutation_pvalue(diffs, opts.get("alternative"))
        if p is None or set(opts) - {"alternative", "zero_method"} or opts.get("zero_method") != "zsplit":
            return self._stats.wilcoxon(list(diffs), **opts)
        return types.SimpleNamespace(statistic=None, pvalue=p)


def _permutation_pvalue(diffs: tuple[float, ...], alternative: str | None) -> float | None:
    """scipy's exact sign-flip p-value for the zsplit signed-rank test, or None where scipy takes
    another method or an error (no ties and no zeros, fewer than 2 or more than 13 pairs, NaNs, a
    two-sided test)."""
    n = len(diffs)
    mags = [abs(d) for d in diffs]
    if (not 2 <= n <= 13 or alternative not in ("less", "greater") or any(math.isnan(d) for d in diffs)
            or (len(set(mags)) == n and 0.0 not in mags)):
        return None
    order = sorted(range(n), key=lambda i: mags[i])
    ranks2 = [0] * n  # doubled average ranks of |d| (integers)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and mags[order[j + 1]] == mags[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks2[order[k]] = i + j + 2
        i = j + 1
    nonzero = [r for r, d in zip(ranks2, diffs) if d != 0]
    observed = sum(r for r, d in zip(ranks2, diffs) if d > 0)
    counts = [1] + [0] * sum(nonzero)  # how many sign flips give each doubled subset sum
    for r in nonzero:
        counts = [c + (counts[s - r] if s >= r else 0) for s, c in enumerate(counts)]
    hits = sum(counts[: observed + 1]) if alternative == "less" else sum(counts[observed:])
    return float(np.float64(hits << (n - len(nonzero))) / np.float64(1 << n))


def _fast_wilcoxon() -> None:
    mod = optuna.pruners._wilcoxon
    if not isinstance(getattr(mod, "ss", None), _FastWilcoxon):
        import scipy.stats

        mod.ss = _FastWilcoxon(scipy.stats)


def make_pruner(prune: bool, prune_p: float, min_examples: int, racing: str = "wilcoxon",
                rate: int = 2) -> optuna.pruners.BasePruner:
    if not prune:
        return optuna.pruners.NopPruner()
    if racing == "halving":
        return SlotStablePruner(PairedHalvingPruner(min_examples, rate))
    _fast_wilcoxon()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SlotStablePruner(optuna.pruners.WilcoxonPruner(p_threshold=prune_p, n_startup_steps=min_examples))
