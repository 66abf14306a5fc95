"""The instruct model as judge (``metric: {name: judge, lm: local-instruct}``): it tells a right answer
from a wrong one on clear cases, through the chat adapter, greedy and cached."""

from __future__ import annotations

import pytest

from optimizer.data import Example

pytestmark = pytest.mark.integration

PAIRS = [("France", "Paris", "Paris", 1.0), ("France", "Paris", "Lyon", 0.0), ("Peru", "Lima", "lima", 1.0),
         ("Japan", "Tokyo", "Kyoto", 0.0), ("Italy", "Rome", "Rome, Italy", 1.0), ("Spain", "Madrid", "Barcelona", 0.0)]


def test_the_instruct_model_judges_clear_cases(tmp_path):
    from test_judge_metric import judge_task

    from optimizer.lm import ResponseCache, create_backend
    from optimizer.metrics import build_metric
    from optimizer.run.inputs import judge_profile

    task = judge_task(tmp_path, lm="local-instruct")
    metric = build_metric(task)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    backend = create_backend(judge_profile(task), cache=cache)
    try:
        metric.attach(backend)
        assert metric.chat  # the instruct profile is a chat model
        got = [metric(Example(f"t:{i}", {"country": c}, gold), {"capital": answer})
               for i, (c, gold, answer, _) in enumerate(PAIRS)]
        want = [w for *_, w in PAIRS]
        assert sum(g == w for g, w in zip(got, want)) >= 5, (got, want)
        paid = backend.usage.paid_calls
        again = [metric(Example(f"t:{i}", {"country": c}, gold), {"capital": answer})
                 for i, (c, gold, answer, _) in enumerate(PAIRS)]
        assert again == got and backend.usage.paid_calls == paid  # greedy and cached: the same judgments
    finally:
        backend.close()
        cache.close()
