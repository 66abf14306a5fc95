"""Statistics on per-example score vectors: bootstrap intervals and paired tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def overlaps(self, other: "Interval") -> bool:
        return not (self.high < other.low or other.high < self.low)


def bootstrap_ci(scores: list[float] | np.ndarray, *, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return Interval(float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), int(x.size))


def paired_bootstrap(a: list[float] | np.ndarray, b: list[float] | np.ndarray, *, resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Interval of mean(b - a) over the same examples and a two-sided bootstrap p-value."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired scores must have the same length")
    d = y - x
    if d.size == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_value": float("nan")}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    # p: how often the centred resampled mean is at least as extreme as the observed one
    centred = means - d.mean()
    p = float((np.abs(centred) >= abs(d.mean())).mean()) if d.any() else 1.0
    return {"diff": float(d.mean()), "low": float(np.quantile(means, alpha)),
            "high": float(np.quantile(means, 1 - alpha)), "p_value": max(p, 1.0 / resamples) if d.any() else 1.0}


def mcnemar(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test for paired 0/1 scores: a two-sided binomial test on the discordant pairs.

    ``a_only``: examples where only ``a`` scored 1; ``b_only``: where only ``b`` did. With no
    discordant pair the p-value is 1.
    """
    from scipy.stats import binomtest

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired scores must have the same length")
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("McNemar's test needs 0/1 scores")
    a_only = int(((x == 1) & (y == 0)).sum())
    b_only = int(((x == 0) & (y == 1)).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "discordant": n, "p_value": min(1.0, p)}


def mcnemar_greater(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """One-sided exact McNemar p-value that ``b`` beats ``a`` (paired 0/1 scores): a binomial test of the
    discordant pairs won by ``b``, alternative "greater"."""
    from scipy.stats import binomtest

    t = mcnemar(a, b)
    n = int(t["discordant"])
    return 1.0 if n == 0 else min(1.0, float(binomtest(int(t["b_only"]), n, 0.5, alternative="greater").pvalue))


def is_binary(*vectors: list[float] | np.ndarray) -> bool:
    return all(np.isin(np.asarray(v, dtype=float), (0.0, 1.0)).all() for v in vectors)


def paired_test(a: list[float] | np.ndarray, b: list[float] | np.ndarray, *, one_sided: bool = False,
                seed: int = 0) -> dict[str, float | str]:
    """Does ``b`` differ from (two-sided) or beat (``one_sided``) ``a`` on the same examples: exact McNemar
    for 0/1 scores, the paired bootstrap otherwise (one-sided: how often the centred resampled mean
    difference reaches the observed one). Returns the test's name, ``diff`` (mean b - a) and ``p_value``."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired scores must have the same length")
    diff = float((y - x).mean()) if x.size else float("nan")
    if is_binary(x, y):
        p = mcnemar_greater(x, y) if one_sided else float(mcnemar(x, y)["p_value"])
        return {"test": "mcnemar", "diff": diff, "p_value": p}
    if not one_sided:
        return {"test": "paired_bootstrap", "diff": diff, "p_value": paired_bootstrap(x, y, seed=seed)["p_value"]}
    d = y - x
    if not d.any():
        return {"test": "paired_bootstrap", "diff": diff, "p_value": 1.0}
    resamples = 2000
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    centred = d[idx].mean(axis=1) - d.mean()
    p = float((centred >= d.mean()).mean())
    return {"test": "paired_bootstrap", "diff": diff, "p_value": max(p, 1.0 / resamples)}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: the i-th smallest of m is multiplied by
    m - i + 1 (i from 1), made monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
