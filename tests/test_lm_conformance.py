"""Every LM backend passes the same checks: the real embedded model in-process (`local`) and the
same model behind a real llama.cpp OpenAI-compatible server on loopback (`openai`)."""

import pytest

from optimizer.errors import ConfigError, LMAuthError, LMConnectionError
from optimizer.lm import create_backend
from optimizer.lm.base import LMRequest
from optimizer.lm.cache import ResponseCache
from optimizer.lm.profiles import LMProfile

PROMPT = ("Classify the sentiment of the movie review.\n\n"
          "Review: a gorgeous, witty, seductive movie.\nSentiment: positive\n\n"
          "Review: the plot is nothing but boilerplate clichés.\nSentiment: negative\n\n"
          "Review: an utterly charming and hilarious film.\nSentiment:")


@pytest.fixture(params=["local", "openai"])
def profile(request, model_path):
    if request.param == "local":
        return LMProfile(name="local", backend="local", n_ctx=2048)
    url = request.getfixturevalue("llama_server")
    return LMProfile(name="server", backend="openai", base_url=url, model="gemma3-270m", api="completions")


def test_greedy_completion_is_deterministic_and_stops(profile, tmp_path):
    with create_backend(profile, cache=False) as lm:
        req = LMRequest(prompt=PROMPT, max_tokens=5, stop=("\n",))
        a, b = lm.complete(req), lm.complete(req)
        assert a.text == b.text
        assert "\n" not in a.text
        assert a.text.strip().lower().startswith("positive")
        assert a.prompt_tokens > 20 and 0 < a.completion_tokens <= 5
        u = lm.usage
        assert u.calls == 2 and u.cache_hits == 0 and u.prompt_tokens == 2 * a.prompt_tokens


def test_cache_serves_the_same_request_once(profile, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    with create_backend(profile, cache=cache) as lm:
        req = LMRequest(prompt=PROMPT, max_tokens=5, stop=("\n",))
        first = lm.complete(req)
        second = lm.complete(req)
        other = lm.complete(LMRequest(prompt=PROMPT, max_tokens=6, stop=("\n",)))  # different params: a new call
        assert not first.cached and second.cached and not other.cached
        assert second.text == first.text
        assert lm.usage.calls == 3 and lm.usage.cache_hits == 1
    # a new backend on the same file (a later run) is served from disk
    with create_backend(profile, cache=ResponseCache(tmp_path / "c.sqlite")) as lm2:
        assert lm2.complete(req).cached
        assert lm2.usage.paid_calls == 0


def test_sampling_draws_are_keyed_by_sample_index(profile):
    with create_backend(profile, cache=False) as lm:
        texts = {lm.complete(LMRequest(prompt="Once upon a time", max_tokens=12, temperature=1.0, sample=i)).text
                 for i in range(4)}
        again = lm.complete(LMRequest(prompt="Once upon a time", max_tokens=12, temperature=1.0, sample=0)).text
        assert len(texts) >= 2  # sampled draws differ
        if profile.backend == "local":
            assert again in texts  # in-process, a draw is reproducible from its seed
        # remote servers honour `seed` at best effort: the response cache is what makes reruns identical


def test_logprobs_of_generated_tokens(profile):
    with create_backend(profile, cache=False) as lm:
        r = lm.complete(LMRequest(prompt=PROMPT, max_tokens=2, logprobs=5))
        assert r.logprobs and isinstance(r.logprobs[0], dict) and len(r.logprobs[0]) >= 2
        assert all(v <= 0.0 for v in r.logprobs[0].values())


def test_openai_unreachable_endpoint_is_one_clear_error():
    prof = LMProfile(name="down", backend="openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0,
                     timeout=5)
    with create_backend(prof, cache=False) as lm:
        with pytest.raises(LMConnectionError, match=r"base_url.*unreachable.*start the server"):
            lm.complete(LMRequest(prompt="hi", max_tokens=1))


def test_openai_key_from_env_never_in_errors(monkeypatch, llama_server):
    prof = LMProfile(name="keyed", backend="openai", base_url=llama_server, model="gemma3-270m",
                     api_key_env="OPTIMIZER_TEST_KEY")
    monkeypatch.delenv("OPTIMIZER_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPTIMIZER_TEST_KEY is not set"):
        create_backend(prof, cache=False)
    monkeypatch.setenv("OPTIMIZER_TEST_KEY", "sk-test-SECRET-1234")
    with create_backend(prof, cache=False) as lm:  # llama.cpp server without --api_key accepts any key
        assert lm.complete(LMRequest(prompt=PROMPT, max_tokens=3, stop=("\n",))).text.strip()


def test_openai_bad_key_is_auth_error(tmp_path, model_path, monkeypatch):
    """A server started with --api_key refuses another key: LMAuthError naming the variable, not the key."""
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import _free_port

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
                             "127.0.0.1", "--port", str(port), "--api_key", "right-key", "--n_ctx", "512"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: it is up
            except Exception:
                time.sleep(0.5)
        monkeypatch.setenv("OPTIMIZER_TEST_KEY", "wrong-SECRET-key")
        prof = LMProfile(name="keyed", backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m",
                         api_key_env="OPTIMIZER_TEST_KEY", max_retries=0)
        with create_backend(prof, cache=False) as lm:
            with pytest.raises(LMAuthError) as e:
                lm.complete(LMRequest(prompt="hi", max_tokens=1))
        assert "OPTIMIZER_TEST_KEY" in str(e.value) and "wrong-SECRET-key" not in str(e.value)
        monkeypatch.setenv("OPTIMIZER_TEST_KEY", "right-key")
        with create_backend(prof, cache=False) as lm:
            assert lm.complete(LMRequest(prompt="Hello", max_tokens=2)).completion_tokens > 0
    finally:
        proc.terminate()
        proc.wait(10)
