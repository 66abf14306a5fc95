"""The LM backend interface: every LM call in the engine goes through ``LMBackend.complete``.

A backend implements ``_generate(request) -> LMResponse`` for one uncached call.
The base class owns what every backend shares: the persistent response cache,
counting (calls, cache hits, prompt and completion tokens, retries, failures),
thread safety of the counters, the retry loop with exponential back-off that
honours ``Retry-After``, an adaptive concurrency limit (AIMD: halved on 429s
and timeouts, grown back one step per window of successes) and the budget
check before every paid call. Implementations live in private modules
(``_local``, ``_openai``) and are registered in ``optimizer.plugins.BACKENDS``;
``tests/test_conformance_backends.py`` runs the same checks on each.

A backend whose calls may overlap (a remote endpoint) sets ``concurrent = True``;
the Evaluator then submits a candidate's examples to a bounded thread pool of
``max_concurrency`` workers. The local llama.cpp backend stays sequential.

Failures: ``_generate`` raises ``RetryableError`` for a transient failure (429,
5xx, timeout, dropped connection, malformed response) carrying the error to
raise once retries are spent: ``LMCallFailed`` (one call lost; the Evaluator
counts it against the trial) or, for a refused connection, ``LMConnectionError``
(the endpoint is down: the run stops). Anything else (``LMAuthError``, ...) is
raised at once.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

from ..errors import LMCallFailed, LMError, RetryableError  # noqa: F401 - LMCallFailed is imported from here too
from .cache import ResponseCache
from .profiles import LMProfile


@dataclass(frozen=True)
class LMRequest:
    """One call: a raw prompt (completion) or chat messages, plus sampling parameters."""

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    max_tokens: int = 16
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    sample: int = 0  # index of a sampled draw; part of the cache key so draws differ
    logprobs: int | None = None  # top-k log-probabilities of generated tokens, if wanted
    # chat label readout: the reply's text before the answer (the adapter's header of the output field);
    # with ``logprobs`` the response holds one top-k, that of the answer's first token after it
    answer_prefix: str | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("an LMRequest has either a prompt or messages")

    @property
    def kind(self) -> str:
        return "completion" if self.prompt is not None else "chat"

    def cache_key(self, model_id: str) -> str:
        payload = {"model": model_id, **asdict(self)}
        if self.answer_prefix is None:  # keys of requests without it are those from before it existed
            del payload["answer_prefix"]
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @staticmethod
    def chat(messages: list[dict[str, str]], **kwargs: Any) -> "LMRequest":
        return LMRequest(messages=tuple((m["role"], m["content"]) for m in messages), **kwargs)


@dataclass
class LMResponse:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, float]] | None = None  # per generated token: {token: logprob}
    cached: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("cached")
        return json.dumps(d, ensure_ascii=False)

    @staticmethod
    def from_json(blob: str) -> "LMResponse":
        return LMResponse(**json.loads(blob), cached=True)


@dataclass
class Usage:
    """Counters for one backend (or a difference of two snapshots)."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0  # calls that failed after their retries (or at once, for non-retryable errors)
    retries: int = 0  # extra attempts after a transient failure (429, 5xx, timeout, ...)

    @property
    def paid_calls(self) -> int:
        return self.calls - self.cache_hits

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) - getattr(other, k) for k in asdict(self)})

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "paid_calls": self.paid_calls}


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except Exception:
        return None


@dataclass
class RetryPolicy:
    """How transient failures are retried.

    ``max_retries`` applies to server errors, timeouts, dropped connections and
    malformed responses; rate limits (429) say "come back later", cost nothing and
    get ``rate_limit_retries``. The wait is ``Retry-After`` when the server sends
    one (capped at ``max_wait``), else exponential: ``base * 2**attempt`` with
    jitter, capped at ``max_delay``.
    """

    max_retries: int = 3
    rate_limit_retries: int = 10
    base: float = 0.5
    max_delay: float = 20.0
    max_wait: float = 120.0

    def allowed(self, kind: str) -> int:
        return max(self.max_retries, self.rate_limit_retries) if kind == "rate_limit" else self.max_retries

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        d = min(self.max_delay, self.base * (2 ** attempt))
        return d * (0.5 + random.random() / 2)


class AdaptiveLimiter:
    """A concurrency limit that adapts to congestion (AIMD).

    At most ``limit`` calls run at once. A rate limit or a timeout halves the
    limit (at most once per ``cooldown`` seconds, so a burst of 429s counts as
    one signal); every ``limit`` successes raise it by one, up to ``maximum``.
    """

    def __init__(self, maximum: int, cooldown: float = 1.0):
        self.maximum = max(1, int(maximum))
        self.limit = float(self.maximum)
        self.active = 0
        self.cooldown = cooldown
        self._last_cut = 0.0
        self._cond = threading.Condition()
        self.min_seen = self.maximum

    def acquire(self) -> None:
        with self._cond:
            while self.active >= max(1, int(self.limit)):
                self._cond.wait()
            self.active += 1

    def release(self, *, congested: bool = False) -> None:
        with self._cond:
            self.active -= 1
            now = time.monotonic()
            if congested:
                if now - self._last_cut >= self.cooldown:
                    self.limit = max(1.0, self.limit / 2)
                    self._last_cut = now
                    self.min_seen = min(self.min_seen, int(self.limit))
            else:
                self.limit = min(float(self.maximum), self.limit + 1.0 / max(1.0, self.limit))
            self._cond.notify_all()


class BudgetHook(Protocol):
    """What the backend asks before and tells after every paid call (optimizer.budget.Budget)."""

    def reserve(self, request: "LMRequest") -> Any: ...

    def commit(self, ticket: Any, response: "LMResponse", key: str | None) -> None: ...

    def release(self, ticket: Any) -> None: ...


class LMBackend(ABC):
    """Base of every backend. Subclasses implement ``_generate`` and ``model_id``.

    What a backend is, for the rest of the engine, is said by the class attributes and
    classmethods below (capabilities), read without an instance through
    ``optimizer.lm.backend_class(profile)``; nothing compares backend names."""

    #: registry name ("local", "openai")
    name: str = ""
    #: calls may overlap (remote endpoints); the local model is sequential
    concurrent: bool = False
    #: default bound of the Evaluator's pool for a concurrent backend
    default_concurrency: int = 8
    #: calls cost nothing (a model run in-process): budgets price them at zero
    free: bool = False
    #: the profile names an OpenAI-compatible endpoint (``base_url``, ``api``, ``api_key_env``) that
    #: exports and parity checks can send the optimized prompt to
    serves_openai_api: bool = False
    #: request fields an export adds (the OpenAI client's ``extra_body``) so that an OpenAI-compatible
    #: server decodes as this backend did (read-only: copy before changing)
    export_extra_body: Mapping[str, Any] = MappingProxyType({})

    #: label readouts work on chat requests too (``LMRequest.answer_prefix``): the top-k log-probabilities of
    #: the answer's first token after the chat adapter's header
    chat_logprobs: bool = False

    @classmethod
    def default_adapter(cls, profile: LMProfile) -> str:
        """How prompts are sent when the profile does not say (``completion`` or ``chat``)."""
        return "completion"

    @classmethod
    def check_profile(cls, profile: LMProfile, file: str | None) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError (naming ``file``) when a profile read from a file lacks what this backend needs."""

    @classmethod
    def chat_renderer(cls, profile: LMProfile) -> Callable[[list[dict[str, str]]], str] | None:
        """For backends whose chat label readout renders the messages itself (the model's own chat template,
        the assistant's turn opened) and reads the answer after the header it appends there: a function
        giving that rendered text, without a call. A stock chat endpoint cannot open the reply for the
        model, so an export writes such a readout as a completion prompt. None (the default): the backend
        sends chat messages to an endpoint, whose reply is read as it comes."""
        return None

    @classmethod
    def token_counter(cls, profile: LMProfile) -> Callable[[str], int] | None:
        """A function counting a completion prompt's tokens as the served model does (BOS included), when the
        tokenizer is at hand without a call; None when it is not."""
        return None

    def __init__(self, profile: LMProfile, cache: ResponseCache | None = None):
        self.profile = profile
        self.cache = cache
        self._usage = Usage()
        self._lock = threading.Lock()
        self.retry = RetryPolicy(max_retries=profile.max_retries)
        self.budget: BudgetHook | None = None
        self.limiter: AdaptiveLimiter | None = None
        self.max_concurrency = 1
        self.seconds = 0.0  # wall time spent in ``complete`` (calls on several threads add up)
        if self.concurrent:
            self.set_concurrency(self.default_concurrency)

    def set_concurrency(self, n: int) -> None:
        """Bound on overlapping calls (the Evaluator's pool size); 1 for sequential backends."""
        n = max(1, int(n)) if self.concurrent else 1
        self.max_concurrency = n
        self.limiter = AdaptiveLimiter(n) if self.concurrent else None

    # -- to implement --------------------------------------------------------
    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the model in cache keys: name plus anything that changes outputs."""

    @abstractmethod
    def _generate(self, request: LMRequest) -> LMResponse:
        """One uncached call. Raise LMError subclasses for expected failures."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (model memory, HTTP pools)."""

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check, without a paid call, that the backend can work (endpoint up, key accepted).

        Raises LMConnectionError / LMAuthError; called before a run touches its run directory."""

    # -- shared --------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        with self._lock:
            return Usage(**asdict(self._usage))

    def complete(self, request: LMRequest) -> LMResponse:
        """The one place an LM call is made: cache, budget, retries, count, call (``seconds`` adds its time)."""
        t0 = time.perf_counter()
        try:
            return self._complete(request)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - t0

    def _complete(self, request: LMRequest) -> LMResponse:
        key = request.cache_key(self.model_id) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                resp = LMResponse.from_json(hit)
                self._count(resp, hit=True)
                return resp
        ticket = self.budget.reserve(request) if self.budget is not None else None  # may raise BudgetExceeded
        try:
            resp = self._attempts(request)
        except BaseException:
            if self.budget is not None:
                self.budget.release(ticket)
            with self._lock:
                self._usage.failures += 1
            raise
        if key is not None:
            self.cache.put(key, self.model_id, resp.to_json())
        self._count(resp, hit=False)
        if self.budget is not None:
            self.budget.commit(ticket, resp, key)
        return resp

    def _attempts(self, request: LMRequest) -> LMResponse:
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                resp = self._generate(request)
            except RetryableError as exc:
                if self.limiter is not None:
                    self.limiter.release(congested=exc.kind in ("rate_limit", "timeout"))
                if attempt >= self.retry.allowed(exc.kind):
                    raise exc.final from None
                with self._lock:
                    self._usage.retries += 1
                time.sleep(self.retry.delay(attempt, exc.retry_after))
                attempt += 1
                continue
            except BaseException:
                if self.limiter is not None:
                    self.limiter.release()
                raise
            if self.limiter is not None:
                self.limiter.release()
            return resp

    def _count(self, resp: LMResponse, *, hit: bool) -> None:
        with self._lock:
            self._usage.calls += 1
            self._usage.cache_hits += int(hit)
            self._usage.prompt_tokens += resp.prompt_tokens
            self._usage.completion_tokens += resp.completion_tokens

    def __enter__(self) -> "LMBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
