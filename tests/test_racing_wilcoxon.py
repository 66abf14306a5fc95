"""The pruner's signed-rank test: our exact sign-flip p-value is scipy's, float for float."""

import random

import pytest
import scipy.stats

from optimizer.search.racing import _FastWilcoxon, _permutation_pvalue


def _cases():
    rng = random.Random(7)
    for n in (2, 3, 5, 8, 10):
        yield [rng.choice([-1.0, 0.0, 1.0]) for _ in range(n)]
        yield [rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]) for _ in range(n)]
    yield [0.0, 0.0, 0.0]
    yield [1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_permutation_pvalue_is_scipys(alternative):
    checked = 0
    for x in _cases():
        mine = _permutation_pvalue(tuple(sorted(x)), alternative)
        if mine is None:  # no ties and no zeros: scipy's own exact test answers
            continue
        want = scipy.stats.wilcoxon(x, alternative=alternative, zero_method="zsplit").pvalue
        assert mine == float(want), x
        checked += 1
    assert checked >= 8


def test_cases_scipy_answers_otherwise_go_to_scipy():
    assert _permutation_pvalue((0.1, 0.2, -0.3), "less") is None  # no ties, no zeros: scipy's exact test
    assert _permutation_pvalue(tuple([1.0] * 14), "less") is None  # more than 13: the normal approximation
    assert _permutation_pvalue((0.0, 1.0, 1.0), "two-sided") is None
    fast = _FastWilcoxon(scipy.stats)
    x = [0.3, -0.1, 0.2, 0.25, -0.4]
    assert fast.wilcoxon(x, alternative="less", zero_method="zsplit").pvalue == \
        scipy.stats.wilcoxon(x, alternative="less", zero_method="zsplit").pvalue
