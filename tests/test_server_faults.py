"""Fault injection against the real llama.cpp server: a proxy on loopback (tests/faultproxy.py) in front of
it injects 429s with Retry-After, 500s, slow responses past the client's timeout, dropped connections and
malformed JSON. The engine must retry, honour Retry-After, count what still fails, and score exactly what a
clean run scores."""

import pytest

from conftest import sst2_task
from faultproxy import FaultProxy
from optimizer.data import make_splits
from optimizer.engine import make_evaluator
from optimizer.lm import create_backend
from optimizer.lm.base import LMCallFailed, LMRequest
from optimizer.lm.profiles import LMProfile
from optimizer.program import Candidate

pytestmark = pytest.mark.integration  # the real llama.cpp server


def server_backend(url, *, concurrency=4, retries=3, timeout=30.0):
    prof = LMProfile(name="server", backend="openai", base_url=url, model="gemma3-270m", api="completions",
                     max_retries=retries, timeout=timeout)
    b = create_backend(prof, cache=False)
    b.set_concurrency(concurrency)
    b.retry.base = 0.05
    return b


@pytest.fixture(scope="module")
def small():
    task = sst2_task(validation=24)
    splits = make_splits(task)
    return task, splits, Candidate(task.instruction, tuple(splits.train[:3]), {})


@pytest.fixture(scope="module")
def clean_texts(llama_server, small):
    task, splits, cand = small
    b = server_backend(llama_server, concurrency=1)
    ev = make_evaluator(task, b.profile, b)
    res = ev.evaluate(cand, splits.validation)
    b.close()
    return [o.text for o in res.outcomes], res.scores


def test_mixed_faults_with_concurrency_score_like_a_clean_run(llama_server, small, clean_texts):
    task, splits, cand = small
    rates = {"429": 0.2, "500": 0.05, "drop": 0.05, "badjson": 0.05}
    with FaultProxy(llama_server, rates=rates, seed=7, retry_after="0.2") as fp:
        b = server_backend(fp.url, concurrency=4, retries=4)
        ev = make_evaluator(task, b.profile, b)
        res = ev.evaluate(cand, splits.validation, tolerate_failures=True)
        assert fp.stats["429"] >= 2 and fp.stats["requests"] > 24
        assert res.failed == 0  # every fault was retried away: no example lost ...
        assert [o.text for o in res.outcomes] == clean_texts[0]  # ... or mis-scored
        assert res.scores == clean_texts[1]
        u = b.usage
        assert u.calls == 24 and u.retries == fp.stats["requests"] - 24 and u.failures == 0
        b.close()


def test_slow_response_past_timeout_is_retried(llama_server, small, clean_texts):
    task, splits, cand = small
    with FaultProxy(llama_server, script=["slow"], slow_seconds=4.0) as fp:
        b = server_backend(fp.url, concurrency=1, timeout=2.0)
        ev = make_evaluator(task, b.profile, b)
        out = ev.run_one(cand, splits.validation[0])
        assert out.text == clean_texts[0][0]
        assert b.usage.retries == 1 and fp.stats["slow"] == 1
        b.close()


def test_call_that_keeps_failing_is_counted_not_scored(llama_server, small):
    task, splits, cand = small
    with FaultProxy(llama_server, script=["500", "500", "drop"]) as fp:
        b = server_backend(fp.url, concurrency=1, retries=1)
        ev = make_evaluator(task, b.profile, b)
        res = ev.evaluate(cand, splits.validation[:3], tolerate_failures=True)
        assert res.failed == 1 and res.outcomes[0].failed and "HTTP 500" in res.outcomes[0].error
        assert len(res.scores) == 2  # the failed example is not a 0
        assert b.usage.failures == 1 and b.usage.calls == 2
        assert fp.stats["requests"] == 2 + 2 + 1  # 2 attempts for the first, a drop + its retry, then ok
        with pytest.raises(LMCallFailed, match="gave up after retries"):
            fp.set(script=["badjson", "badjson"])
            b.complete(LMRequest(prompt="Review: dull\nSentiment:", max_tokens=2))
        b.close()
