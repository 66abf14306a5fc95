"""The sampler and the slots: everything random about a trial derives from ``(seed, slot)``.

Optuna samplers keep their RNG in memory and order observations by trial number, so a resumed run would
propose differently from an uninterrupted one. ``SlotSeededTPE`` re-seeds TPE from the slot before every
trial and shows it the study in slot order (``_SlotView``); ``SlotStablePruner`` does the same for a
pruner."""

from __future__ import annotations

import copy
import hashlib
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from .attrs import ATTR


def slot_seed(seed: int, slot: int) -> int:
    return int(hashlib.sha256(f"{seed}:slot:{slot}".encode()).hexdigest()[:8], 16)


def trial_slot(t: Any) -> int:
    attrs = t.user_attrs if hasattr(t, "user_attrs") else {}
    return int(attrs.get(ATTR + "slot", t.number))


class SlotSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random state is re-seeded from (seed, slot) before every trial.

    Optuna samplers keep their RNG in memory, so a resumed process would draw
    different parameters than an uninterrupted one. Re-seeding per slot makes a
    trial's proposal a function of the seed, the slot and the finished trials only."""

    def __init__(self, *, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        s = slot_seed(self._base_seed, trial_slot(trial))
        self._rng.rng.seed(s)
        self._random_sampler._rng.rng.seed(s)
        super().before_trial(study, trial)

    def _sample(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        # TPE orders its observations by trial number; a slot re-run after a crash has a new number,
        # so it sees the history in slot order, numbered by slot, as an uninterrupted run would
        return super()._sample(_SlotView(study), _renumbered(trial), search_space)


def _renumbered(t: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    if trial_slot(t) == t.number:
        return t
    c = copy.copy(t)
    c.number = trial_slot(t)
    return c


class _SlotView:
    """A study seen in slot order, its trials numbered by slot (for the sampler and the pruner)."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        trials = self._study._get_trials(*args, **kwargs)
        return [_renumbered(t) for t in sorted(trials, key=lambda t: (trial_slot(t), t.number))]

    def get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        trials = self._study.get_trials(*args, **kwargs)
        return [_renumbered(t) for t in sorted(trials, key=lambda t: (trial_slot(t), t.number))]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """Ties go to the earlier slot (storages break ties by insertion order, which a resume changes)."""
        complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise ValueError("no trial is completed yet")
        return max(complete, key=lambda t: (t.value, -trial_slot(t), -t.number))


class SlotStablePruner(optuna.pruners.BasePruner):
    """Wraps a pruner so that "the best trial" it compares with does not depend on trial numbers."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.inner.prune(_SlotView(study), trial)  # type: ignore[arg-type]


def startup_trials(n_trials: int) -> int:
    """How many trials TPE draws at random before it models the finished ones, unless the task pins it
    (``optimizer.startup_trials``): a quarter of the trials, at least 4. A run capped by ``--search-calls``
    may end before the startup does, so its search is then a seeded random search; sizing the startup to
    what the cap affords instead (4 in every capped run of the compare harness) scored lower on held-out
    data there (experiments/results/compare, rows ours@small-model-startup4)."""
    return max(4, n_trials // 4)


def make_sampler(seed: int, n_startup: int) -> SlotSeededTPE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SlotSeededTPE(seed=seed, multivariate=True, n_startup_trials=n_startup)
