"""Every LM backend registered in ``optimizer.plugins.BACKENDS`` passes the same checks.

``CASES`` maps each registered backend to the ways the tests can run it: the real embedded model in-process
(``local``), the same model behind a real llama.cpp OpenAI-compatible server on loopback (``openai``), both
``integration`` (they load the model), and the ``openai`` client against the canned loopback server of
``tests/faultproxy.py`` (scripted: no model). A backend registered without a case fails
``test_every_registered_backend_has_a_case``. ``test_a_new_backend_is_one_class_and_its_registration``
registers a toy backend and runs the same checks on it.

The checks: ``CONTRACT`` holds for every case (types, greedy determinism, counting, the response cache, the
budget hook, capability attributes); ``DECODING`` for cases whose endpoint honours the request (stop, max_tokens,
logprobs, sampled draws keyed by ``sample``; the canned server answers a fixed word); ``test_real_model_answers``
only for the real model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import yaml

from faultproxy import FaultProxy
from optimizer.budget import load_prices
from optimizer.errors import ConfigError, LMAuthError, LMConnectionError
from optimizer.lm import backend_class, create_backend, load_profile
from optimizer.lm.base import LMBackend, LMRequest, LMResponse
from optimizer.lm.cache import ResponseCache
from optimizer.lm.profiles import LMProfile, Prices
from optimizer.plugins import BACKENDS
from optimizer.task import load_task

PROMPT = ("Classify the sentiment of the movie review.\n\n"
          "Review: a gorgeous, witty, seductive movie.\nSentiment: positive\n\n"
          "Review: the plot is nothing but boilerplate clichés.\nSentiment: negative\n\n"
          "Review: an utterly charming and hilarious film.\nSentiment:")


@dataclass(frozen=True)
class Case:
    """One way to run a backend in the tests: how to build its profile (from pytest's ``request``, for
    fixtures such as a server), and what the endpoint behind it honours."""

    id: str
    profile: Callable[[pytest.FixtureRequest], LMProfile]
    decodes: bool  # honours stop, max_tokens, logprobs and the sample index (a real or toy model)
    real_model: bool = False  # the embedded model: answers the sentiment prompt
    seeded_draws: bool = False  # a sampled draw is reproducible from its sample index (in-process)
    integration: bool = False  # loads the real model


def _local(request):
    return LMProfile(name="local", backend="local", n_ctx=2048)


def _llama_server(request):
    return LMProfile(name="server", backend="openai", base_url=request.getfixturevalue("llama_server"),
                     model="gemma3-270m", api="completions")


def _canned(request):
    return LMProfile(name="canned", backend="openai", base_url=request.getfixturevalue("canned_server"),
                     model="canned", api="completions", max_retries=0)


CASES: dict[str, list[Case]] = {
    "local": [Case("local", _local, decodes=True, real_model=True, seeded_draws=True, integration=True)],
    "openai": [Case("llama-server", _llama_server, decodes=True, real_model=True, integration=True),
               Case("canned-server", _canned, decodes=False)],
}


def _params(select: Callable[[Case], bool] = lambda c: True) -> list:
    out = []
    for name in BACKENDS.names():
        for case in CASES.get(name, []):
            if select(case):
                marks = [pytest.mark.integration] if case.integration else []
                out.append(pytest.param(case, id=f"{name}-{case.id}", marks=marks))
    return out


@pytest.fixture(scope="module")
def canned_server():
    with FaultProxy(None) as fp:
        yield fp.url


# ------------------------------------------------------------------------------------------ the checks

def check_capabilities(profile: LMProfile, tmp_path) -> None:
    """The class is the registered one and its capabilities have the documented types."""
    cls = backend_class(profile)
    assert issubclass(cls, LMBackend) and cls.name == profile.backend
    assert isinstance(cls.free, bool) and isinstance(cls.serves_openai_api, bool)
    assert isinstance(cls.concurrent, bool) and cls.default_concurrency >= 1
    assert isinstance(cls.chat_logprobs, bool)
    assert all(isinstance(k, str) for k in cls.export_extra_body)
    assert cls.default_adapter(profile) in ("completion", "chat")
    cls.check_profile(profile, "profile.yaml")  # a working profile passes its backend's check
    if cls.serves_openai_api:
        assert profile.base_url
    if cls.free:
        assert load_prices(profile.model_copy(update={"prices": None})) == Prices()


def check_greedy_is_deterministic_and_counted(profile: LMProfile, tmp_path) -> None:
    with create_backend(profile, cache=False) as lm:
        lm.preflight()
        req = LMRequest(prompt=PROMPT, max_tokens=5, stop=("\n",))
        a, b = lm.complete(req), lm.complete(req)
        assert isinstance(a, LMResponse) and isinstance(a.text, str) and not a.cached
        assert a.text == b.text
        assert isinstance(a.prompt_tokens, int) and a.prompt_tokens > 0 and a.completion_tokens >= 0
        u = lm.usage
        assert u.calls == 2 and u.cache_hits == 0 and u.prompt_tokens == 2 * a.prompt_tokens
        assert u.failures == 0 and u.paid_calls == 2


def check_cache_serves_the_same_request_once(profile: LMProfile, tmp_path) -> None:
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


class _Hook:
    def __init__(self):
        self.events: list[str] = []

    def reserve(self, request):
        self.events.append("reserve")
        return len(self.events)

    def commit(self, ticket, response, key):
        self.events.append("commit")

    def release(self, ticket):
        self.events.append("release")


def check_budget_is_asked_before_every_paid_call(profile: LMProfile, tmp_path) -> None:
    with create_backend(profile, cache=ResponseCache(tmp_path / "b.sqlite")) as lm:
        lm.budget = hook = _Hook()
        req = LMRequest(prompt=PROMPT, max_tokens=3, stop=("\n",))
        lm.complete(req)
        lm.complete(req)  # a cache hit is free: not reserved
        assert hook.events == ["reserve", "commit"]


CONTRACT = [check_capabilities, check_greedy_is_deterministic_and_counted, check_cache_serves_the_same_request_once,
            check_budget_is_asked_before_every_paid_call]


def check_stop_and_max_tokens(profile: LMProfile, tmp_path) -> None:
    with create_backend(profile, cache=False) as lm:
        a = lm.complete(LMRequest(prompt=PROMPT, max_tokens=5, stop=("\n",)))
        assert "\n" not in a.text and 0 < a.completion_tokens <= 5
        b = lm.complete(LMRequest(prompt="Once upon a time", max_tokens=3))
        assert 0 < b.completion_tokens <= 3


def check_sampling_draws_are_keyed_by_sample_index(profile: LMProfile, tmp_path, seeded: bool = True) -> None:
    with create_backend(profile, cache=False) as lm:
        texts = {lm.complete(LMRequest(prompt="Once upon a time", max_tokens=12, temperature=1.0, sample=i)).text
                 for i in range(4)}
        again = lm.complete(LMRequest(prompt="Once upon a time", max_tokens=12, temperature=1.0, sample=0)).text
        assert len(texts) >= 2  # sampled draws differ
        if seeded:
            assert again in texts  # in-process, a draw is reproducible from its seed
        # remote servers honour `seed` at best effort: the response cache is what makes reruns identical


def check_logprobs_of_generated_tokens(profile: LMProfile, tmp_path) -> None:
    with create_backend(profile, cache=False) as lm:
        r = lm.complete(LMRequest(prompt=PROMPT, max_tokens=2, logprobs=5))
        assert r.logprobs and isinstance(r.logprobs[0], dict) and len(r.logprobs[0]) >= 2
        assert all(v <= 0.0 for v in r.logprobs[0].values())


DECODING = [check_stop_and_max_tokens, check_logprobs_of_generated_tokens]


# ------------------------------------------------------------------------------- every registered backend

def test_every_registered_backend_has_a_case():
    missing = [name for name in BACKENDS.names() if not CASES.get(name)]
    assert not missing, f"add test cases for {missing} to CASES"


@pytest.mark.parametrize("case", _params())
@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__[len("check_"):])
def test_contract(case, check, request, tmp_path):
    check(case.profile(request), tmp_path)


@pytest.mark.parametrize("case", _params(lambda c: c.decodes))
@pytest.mark.parametrize("check", DECODING, ids=lambda f: f.__name__[len("check_"):])
def test_decoding(case, check, request, tmp_path):
    check(case.profile(request), tmp_path)


@pytest.mark.parametrize("case", _params(lambda c: c.decodes))
def test_sampling(case, request, tmp_path):
    check_sampling_draws_are_keyed_by_sample_index(case.profile(request), tmp_path, seeded=case.seeded_draws)


@pytest.mark.parametrize("case", _params(lambda c: c.real_model))
def test_real_model_answers(case, request):
    with create_backend(case.profile(request), cache=False) as lm:
        a = lm.complete(LMRequest(prompt=PROMPT, max_tokens=5, stop=("\n",)))
        assert a.text.strip().lower().startswith("positive")
        assert a.prompt_tokens > 20


# ------------------------------------------------------------------------------ adding a backend

class ToyBackend(LMBackend):
    """A backend in one class: a pseudo-model whose tokens are words drawn from a hash of the prompt (and, when
    sampling, of the sample index). It honours stop, max_tokens and logprobs like a real one."""

    name = "toy"
    free = True
    WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")

    @property
    def model_id(self) -> str:
        return f"toy:{self.profile.model}"

    @classmethod
    def token_counter(cls, profile):
        return lambda text: 1 + len(text.split())

    def _word(self, seed: str, i: int) -> str:
        return self.WORDS[int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), 16) % len(self.WORDS)]

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt if request.prompt is not None else "\n".join(c for _, c in request.messages)
        seed = prompt + (f"#{request.sample}" if request.temperature > 0 else "")
        tokens = [" " + self._word(seed, i) + ("\n" if i == 1 else "") for i in range(request.max_tokens)]
        text, n = "", 0
        for tok in tokens:
            n += 1
            text += tok
            hit = next((s for s in request.stop if s in text), None)
            if hit is not None:
                text = text[: text.index(hit)]
                break
        lp = None
        if request.logprobs:
            first = self._word(seed, 0)
            lp = [{f" {w}": (0.0 if w == first else -1.0 - k) for k, w in enumerate(self.WORDS[: request.logprobs])}]
            lp[0].setdefault(f" {first}", 0.0)
            total = math.log(sum(math.exp(v) for v in lp[0].values()))
            lp = [{t: v - total for t, v in lp[0].items()}]
        return LMResponse(text=text, prompt_tokens=1 + len(prompt.split()), completion_tokens=n,
                          finish_reason="stop", logprobs=lp)


@pytest.fixture
def toy_backend():
    with BACKENDS.temporarily("toy", ToyBackend) as cls:
        yield cls


def test_a_new_backend_is_one_class_and_its_registration(toy_backend, tmp_path):
    prof_file = tmp_path / "toy.yaml"
    prof_file.write_text(yaml.safe_dump({"backend": "toy", "model": "toy-1"}))
    profile = load_profile(str(prof_file))  # the profile schema takes the registered name
    assert backend_class(profile) is ToyBackend and profile.resolved_adapter == "completion"
    for check in CONTRACT + DECODING:
        check(profile, tmp_path)
    check_sampling_draws_are_keyed_by_sample_index(profile, tmp_path, seeded=True)
    # a task naming it validates
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({
        "task": "toy", "dataset": {"files": {"train": "x.jsonl"}}, "lm": str(prof_file),
        "splits": {"train": {"from": "train"}, "validation": {"from": "train"}, "test": {"from": "train"}},
        "inputs": [{"name": "text"}], "output": {"name": "answer"}, "instruction": "Do it.", "metric": "exact_match"}))
    assert load_task(task).lm == str(prof_file)


def test_an_unregistered_backend_is_one_clear_error(tmp_path):
    prof_file = tmp_path / "toy.yaml"
    prof_file.write_text(yaml.safe_dump({"backend": "toy"}))
    with pytest.raises(ConfigError, match=r"toy\.yaml: backend: invalid value 'toy' \(fix: use one of 'local' or "
                                          r"'openai'\)"):
        load_profile(str(prof_file))
    with pytest.raises(ConfigError, match=r"unknown LM backend 'toy'.*use one of local, openai"):
        BACKENDS.get("toy")


# ------------------------------------------------------------------------------ the openai backend

def test_openai_unreachable_endpoint_is_one_clear_error():
    prof = LMProfile(name="down", backend="openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0,
                     timeout=5)
    with create_backend(prof, cache=False) as lm:
        with pytest.raises(LMConnectionError, match=r"base_url.*unreachable.*start the server"):
            lm.complete(LMRequest(prompt="hi", max_tokens=1))


@pytest.mark.integration
def test_openai_key_from_env_never_in_errors(monkeypatch, llama_server):
    prof = LMProfile(name="keyed", backend="openai", base_url=llama_server, model="gemma3-270m",
                     api_key_env="OPTIMIZER_TEST_KEY")
    monkeypatch.delenv("OPTIMIZER_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPTIMIZER_TEST_KEY is not set"):
        create_backend(prof, cache=False)
    monkeypatch.setenv("OPTIMIZER_TEST_KEY", "sk-test-SECRET-1234")
    with create_backend(prof, cache=False) as lm:  # llama.cpp server without --api_key accepts any key
        assert lm.complete(LMRequest(prompt=PROMPT, max_tokens=3, stop=("\n",))).text.strip()


@pytest.mark.integration
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
