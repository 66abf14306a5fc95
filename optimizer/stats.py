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
