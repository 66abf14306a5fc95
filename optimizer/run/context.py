"""``RunContext``: what the phases of a run share, filled in phase by phase, and the one place that closes
what they opened (evaluator pool, study storage, LM backends, response cache, run directory lock)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..budget import Budget, Limits
from ..data import Splits
from ..evaluate import Evaluator
from ..lm import LMBackend, ResponseCache
from ..lm.base import Usage
from ..lm.profiles import LMProfile
from ..rundir import RunDir
from ..search import Search, SearchSpace
from ..task import TaskSpec
from .options import RunOptions

PHASES = ("proposer", "probe", "bootstrap", "search", "test", "confirmation")  # the LM use the summary reports, per phase


@dataclass
class RunContext:
    task: TaskSpec
    opts: RunOptions
    emit: Callable[..., None]
    seed: int
    n_trials: int  # requested; once the space is known, the study's (a larger --trials extends it)
    limits: Limits
    t_start: float = field(default_factory=time.perf_counter)
    # -- inputs (optimizer.run.inputs) ---------------------------------------------------------------
    splits: Splits = None  # type: ignore[assignment]
    profile: LMProfile = None  # type: ignore[assignment]
    proposer_profile: LMProfile = None  # type: ignore[assignment]
    cache: ResponseCache | None = None  # the response cache this run opened (None when injected or off)
    backend: LMBackend = None  # type: ignore[assignment]
    proposer_backend: LMBackend = None  # type: ignore[assignment]  # the task backend unless proposer_lm
    judge_backend: LMBackend | None = None  # the judge metric's (metric.lm), always a backend of its own
    prices: Any = None
    evaluator: Evaluator = None  # type: ignore[assignment]
    scorings: list[str] = field(default_factory=list)
    storage: Any = None  # the Optuna storage object
    study_name: str = ""
    fingerprint: str = ""
    # -- the run directory and the study ---------------------------------------------------------------
    run: RunDir | None = None
    budget: Budget = None  # type: ignore[assignment]
    phases: dict[str, dict[str, int]] = field(default_factory=lambda: {n: Usage().to_dict() for n in PHASES})
    exclusive: bool = True  # the run's own storage: no other worker shares the study
    study: Any = None
    selection: list = field(default_factory=list)  # what trials are scored on
    # -- the candidate space (optimizer.run.space) and the search (optimizer.run.trials) ---------------------
    setup: dict[str, Any] | None = None  # what the study's creator published
    notes: dict[str, Any] = field(default_factory=dict)  # the proposers' and selectors' notes (creator only)
    space: SearchSpace | None = None
    search: Search | None = None
    early_search: Usage = field(default_factory=Usage)  # LM use of the slots that ran before the bootstrap teacher

    def backends(self) -> list[LMBackend]:
        """The task backend and, when it is another one, the proposer's; the judge metric's."""
        return list({id(b): b for b in (self.backend, self.proposer_backend, self.judge_backend)
                     if b is not None}.values())

    def usage(self) -> Usage:
        """LM use of the whole run so far, both backends."""
        if self.proposer_backend is self.backend:
            return self.backend.usage
        return self.backend.usage + self.proposer_backend.usage

    def count(self, phase: str, since: Usage) -> None:
        """Add the task backend's calls since the snapshot ``since`` to ``phase``'s usage."""
        before = self.phases.get(phase, {})
        self.phases[phase] = {k: before.get(k, 0) + v for k, v in (self.backend.usage - since).to_dict().items()}

    def wall_seconds(self) -> float:
        return round(time.perf_counter() - self.t_start, 3)

    def close(self) -> None:
        """Close what the run opened, whatever phase it reached: on success, on a stop and on a failure."""
        if self.evaluator is not None:
            self.evaluator.close()
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            # closing the pooled connections now checkpoints SQLite's WAL into study.db: the finished run
            # directory is self-contained, and no later garbage collection rewrites it behind our back
            engine.dispose()
        for b in self.backends():
            if b is not self.opts.backend and b is not self.opts.judge_backend:  # injected: the caller's
                b.close()
            b.budget = None
        if self.cache is not None:
            self.cache.close()
        if self.run is not None:
            self.run.release()
