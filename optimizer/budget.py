"""Budgets: a hard limit on what a run may spend, checked before every paid LM call.

``--max-calls N`` limits **paid** calls: calls that reached the endpoint and
were answered (cache hits are free and never counted; retries of a 429 or a
5xx are not answers and are not counted either). ``--max-tokens`` limits paid
prompt + completion tokens, ``--max-cost`` their price (``configs/prices.yaml``
or the profile's ``prices``).

The check is a reservation: before a paid call the backend asks ``reserve``;
the call is refused (``BudgetExceeded``) when what was spent, plus what is in
flight, plus this call would pass a limit. So ``--max-calls`` is never exceeded
at all, even with 16 calls in flight. Tokens are not known before the answer:
a call reserves an estimate (prompt characters / 3 + its ``max_tokens``) and
the real count replaces it on return, so a token or cost limit can be passed
only by the estimate's error on the calls in flight.

What was spent is appended to ``spend.jsonl`` in the run directory, one line
per paid call (a hash of the request, token counts; never a prompt or a key),
written before the next call starts. A resumed run reads it back, so a budget
covers the run directory across restarts and crashes, not one process.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from .errors import BudgetExceeded, ConfigError
from .configfile import REPO_CONFIGS
from .lm import backend_class
from .lm.base import LMRequest, LMResponse
from .lm.profiles import LMProfile, Prices

PRICES_FILE = REPO_CONFIGS / "prices.yaml"


def load_prices(profile: LMProfile, path: Path | None = None) -> Prices | None:
    """Prices for the profile's model: the profile's own ``prices``, else ``configs/prices.yaml``.

    A free backend (the local model) costs nothing. Returns None when no price is known."""
    if profile.prices is not None:
        return profile.prices
    if backend_class(profile).free:
        return Prices()
    path = path or PRICES_FILE
    if not path.exists():
        return None
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                          fix="correct the YAML syntax") from None
    models = table.get("models", table) if isinstance(table, dict) else {}
    if not isinstance(models, dict):
        raise ConfigError("expected a mapping of model name to prices", file=str(path), field="models",
                          fix="write `model-name: {prompt_per_1k: ..., completion_per_1k: ...}`")
    for pattern, value in models.items():
        if fnmatch(profile.model, str(pattern)):
            try:
                return Prices.model_validate(value or {})
            except Exception:
                raise ConfigError(f"invalid prices for {pattern!r}", file=str(path), field=f"models.{pattern}",
                                  fix="give prompt_per_1k and completion_per_1k as numbers") from None
    return None


def cost_of(prices: Prices | None, prompt_tokens: float, completion_tokens: float) -> float:
    if prices is None:
        return 0.0
    return prompt_tokens / 1000.0 * prices.prompt_per_1k + completion_tokens / 1000.0 * prices.completion_per_1k


def estimate_tokens(request: LMRequest) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use, before it is made: a deliberately high guess."""
    if request.prompt is not None:
        chars = len(request.prompt)
    else:
        chars = sum(len(c) + 8 for _, c in request.messages or ())
    return chars // 3 + 1, request.max_tokens


@dataclass
class Spend:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Limits:
    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.max_calls, self.max_tokens, self.max_cost))

    def check(self) -> None:
        for name, value in (("--max-calls", self.max_calls), ("--max-tokens", self.max_tokens),
                            ("--max-cost", self.max_cost)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}", field=name,
                                  fix=f"pass {name} with a positive number or leave it out")


class Budget:
    """Thread-safe spend accounting with reservations (see the module docstring)."""

    def __init__(self, limits: Limits | None = None, *, prices: Prices | None = None,
                 log_path: Path | None = None):
        self.limits = limits or Limits()
        self.prices = prices
        self.log_path = Path(log_path) if log_path else None
        self.spent = Spend()
        self.previous = Spend()  # spent by earlier processes on this run directory
        self._inflight_calls = 0
        self._inflight_prompt = 0
        self._inflight_completion = 0
        self._lock = threading.Lock()
        self.tripped: str | None = None  # the limit that refused a call, once one did
        self.refused = 0
        if self.log_path is not None and self.log_path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.log_path, encoding="utf-8") as fh:  # type: ignore[arg-type]
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                self.previous.calls += 1
                self.previous.prompt_tokens += int(rec.get("p", 0))
                self.previous.completion_tokens += int(rec.get("c", 0))
        self.spent = Spend(**vars(self.previous))

    @property
    def cost(self) -> float:
        return cost_of(self.prices, self.spent.prompt_tokens, self.spent.completion_tokens)

    # -- the hook the backend calls ----------------------------------------------------------
    def reserve(self, request: LMRequest) -> tuple[int, int]:
        est_p, est_c = estimate_tokens(request)
        lim = self.limits
        with self._lock:
            reason = None
            if lim.max_calls is not None and self.spent.calls + self._inflight_calls + 1 > lim.max_calls:
                reason = f"--max-calls {lim.max_calls} reached ({self.spent.calls} paid calls)"
            elif lim.max_tokens is not None and (self.spent.tokens + self._inflight_prompt
                                                 + self._inflight_completion + est_p + est_c) > lim.max_tokens:
                reason = f"--max-tokens {lim.max_tokens} reached ({self.spent.tokens} paid tokens)"
            elif lim.max_cost is not None and cost_of(
                    self.prices, self.spent.prompt_tokens + self._inflight_prompt + est_p,
                    self.spent.completion_tokens + self._inflight_completion + est_c) > lim.max_cost:
                reason = f"--max-cost {lim.max_cost:g} reached ({self.cost:.6g} spent)"
            if reason is not None:
                self.refused += 1
                if self.tripped is None:
                    self.tripped = reason
                flag = reason.split()[0]
                raise BudgetExceeded(reason, field=flag,
                                     fix=f"raise {flag} and run the same command again to continue")
            self._inflight_calls += 1
            self._inflight_prompt += est_p
            self._inflight_completion += est_c
        return est_p, est_c

    def release(self, ticket: Any) -> None:
        if ticket is None:
            return
        est_p, est_c = ticket
        with self._lock:
            self._inflight_calls -= 1
            self._inflight_prompt -= est_p
            self._inflight_completion -= est_c

    def commit(self, ticket: Any, response: LMResponse, key: str | None) -> None:
        est_p, est_c = ticket
        with self._lock:
            self._inflight_calls -= 1
            self._inflight_prompt -= est_p
            self._inflight_completion -= est_c
            self.spent.calls += 1
            self.spent.prompt_tokens += response.prompt_tokens
            self.spent.completion_tokens += response.completion_tokens
            if self.log_path is not None:
                line = json.dumps({"key": key[:24] if key else None, "p": response.prompt_tokens,
                                   "c": response.completion_tokens}) + "\n"
                fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())  # one write(2): survives a SIGKILL of this process
                finally:
                    os.close(fd)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"paid_calls": self.spent.calls, "prompt_tokens": self.spent.prompt_tokens,
                             "completion_tokens": self.spent.completion_tokens,
                             "previous_paid_calls": self.previous.calls}
        if self.prices is not None:
            d["cost"] = round(self.cost, 6)
        limits = {k: v for k, v in vars(self.limits).items() if v is not None}
        if limits:
            d["limits"] = limits
        if self.tripped:
            d["stopped_by"] = self.tripped
        return d
