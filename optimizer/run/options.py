"""What a caller passes to a run (``RunOptions``) and gets back (``RunResult``), and the checks on the options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..budget import Limits
from ..errors import ConfigError
from ..lm import LMBackend
from ..program import Candidate


@dataclass
class RunOptions:
    trials: int | None = None
    seed: int | None = None
    out: Path | None = None
    # the folder a run without `out` goes into, and where an unfinished run of the same fingerprint is looked
    # for to resume (the CLI passes experiments/runs); a run needs `out` or `runs_dir`
    runs_dir: Path | None = None
    lm: str | None = None  # profile name or path; overrides task.lm
    storage: str | None = None  # Optuna storage URL; default sqlite in the run directory
    study: str | None = None
    cache: bool = True
    cache_dir: Path | None = None
    backend: LMBackend | None = None  # inject a ready backend (tests, library use); overrides lm/cache
    judge_backend: LMBackend | None = None  # inject the judge metric's backend (tests); else from metric.lm
    concurrency: int | None = None  # calls in flight for a remote backend (default: backend.default_concurrency)
    max_calls: int | None = None  # paid (non-cached) LM calls of the run directory, over all restarts
    max_tokens: int | None = None  # paid prompt + completion tokens
    max_cost: float | None = None  # at the prices of configs/prices.yaml or the profile's `prices`
    # LM calls (cache hits included) before the test report: proposer, probes, bootstrap, trials and the
    # confirmation of the top candidates (the trials stop short by what it takes: ``run.verdict``); when
    # reached, no further trial starts (a running one is cut) and the best so far is reported on test
    search_calls: int | None = None
    max_failure_rate: float = 0.1  # a trial with more failed calls (after retries) than this is marked failed
    resume: bool = True  # without `out`: continue the newest unfinished run directory of the same run
    setup_timeout: float = 1800.0  # a worker waits this long for the study's creator to publish the space
    grace: float = 60.0  # seconds without a heartbeat before another worker's running trial counts as dead
    preflight: bool = True  # check the endpoint and key (GET /models) before touching the run directory


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    baseline: Candidate
    best: Candidate
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped(self) -> str | None:
        return self.summary.get("stopped")


def check_options(opts: RunOptions, n_trials: int) -> Limits:
    if n_trials <= 0:
        raise ConfigError("--trials must be positive", field="--trials", fix="pass --trials 1 or more")
    if opts.search_calls is not None and opts.search_calls < 1:
        raise ConfigError(f"--search-calls must be positive, got {opts.search_calls}", field="--search-calls",
                          fix="pass the number of LM calls the search may make, e.g. --search-calls 600")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts.concurrency}", field="--concurrency",
                          fix="pass --concurrency 1 (sequential) or more")
    if not 0 <= opts.max_failure_rate < 1:
        raise ConfigError(f"--max-failure-rate must be in [0, 1), got {opts.max_failure_rate}",
                          field="--max-failure-rate", fix="pass a fraction such as 0.1")
    limits = Limits(opts.max_calls, opts.max_tokens, opts.max_cost)
    limits.check()
    return limits


def check_run_dir(opts: RunOptions) -> None:
    """A run writes somewhere the caller chose: the library has no default folder of its own."""
    if opts.out is None and opts.runs_dir is None:
        raise ConfigError("no run directory: neither out nor runs_dir is given", field="--out",
                          fix="pass out (the run directory) or runs_dir (the folder a run without out goes "
                              "into, e.g. experiments/runs)")
