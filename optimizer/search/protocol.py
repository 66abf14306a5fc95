"""The distributed setup protocol: how workers on one storage agree on a study.

The first worker creates the study (atomically), builds the candidate space, stores it with the run's
setup, enqueues the ``n_trials`` slots as WAITING trials and marks the study ready; every other worker
waits for that, checks that it runs the same task, data and seed, and reads the space back. While a
worker runs a trial on a shared storage, a heartbeat marks it alive, so that the others can tell a trial
whose process died."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import optuna

from ..data import Example
from ..errors import ConfigError, StorageError
from .attrs import ATTR
from .racing import make_pruner
from .sampling import make_sampler, startup_trials, trial_slot
from .space import ProgramSpace, SearchSpace, space_from_description
from .storage import _storage_error


def connect_study(storage: optuna.storages.BaseStorage, name: str, seed: int, n_trials: int, *, prune: bool,
                  prune_p: float, min_examples: int, url: str = "", racing: str = "wilcoxon",
                  halving_rate: int = 2) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists. Returns (study, created_by_us); creation is atomic."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(seed, startup_trials(n_trials))
    pruner = make_pruner(prune, prune_p, min_examples, racing, halving_rate)
    try:
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner, load_if_exists=False)
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            pass
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except (StorageError, ConfigError):
        raise
    except Exception as exc:
        raise _storage_error(url or "storage", exc) from None
    setup = study.user_attrs.get(ATTR + "setup")
    if setup:
        study.sampler = make_sampler(seed, setup_startup(setup, n_trials))  # as the study was created
    return study, False


def setup_startup(setup: dict[str, Any], n_trials: int) -> int:
    """TPE's startup trials as the study's creator fixed them (studies from before that was stored: the
    quarter of their trials they used)."""
    return int(setup.get("startup_trials") or startup_trials(int(setup.get("n_trials", n_trials))))


def study_setup(study: optuna.Study) -> dict[str, Any] | None:
    """What the creator stored, once the study is ready (space, slots, seed), else None."""
    attrs = study._storage.get_study_user_attrs(study._study_id)
    return attrs.get(ATTR + "setup") if attrs.get(ATTR + "ready") else None


def check_setup(setup: dict[str, Any], *, task: str, seed: int, data: str) -> None:
    for key, mine in (("task", task), ("seed", seed), ("data", data)):
        if setup.get(key) != mine:
            raise ConfigError(f"the study was created with {key} {setup.get(key)!r}, this run has {mine!r}",
                              field="--study" if key != "seed" else "--seed",
                              fix="run with the same task, data and --seed as the study, or name a new --study")


def publish_setup(study: optuna.Study, space: SearchSpace, setup: dict[str, Any]) -> None:
    """Store the candidate space, enqueue the slots, then mark the study ready (creator only)."""
    study.set_user_attr(ATTR + "space", space.describe())
    ensure_slots(study, space, int(setup["n_trials"]))
    study.set_user_attr(ATTR + "setup", setup)
    study.set_user_attr(ATTR + "ready", True)


def ensure_slots(study: optuna.Study, space: SearchSpace, n_trials: int) -> int:
    """Enqueue the slots 0..n_trials-1 that have no trial yet; returns how many were added (the creator
    also calls it for the early slots alone, before the space is published)."""
    have = {trial_slot(t) for t in study.get_trials(deepcopy=False)}
    added = 0
    for k in range(n_trials):
        if k not in have:
            params = space.fixed_params(k) or {}
            study.enqueue_trial(params, user_attrs={ATTR + "slot": k})
            added += 1
    return added


def wait_setup(study: optuna.Study, *, timeout: float, poll: float = 1.0,
               on_event: Callable[..., None] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        setup = study_setup(study)
        if setup is not None:
            return setup
        if not told and on_event is not None:
            on_event("waiting", what="study setup by the worker that created the study")
            told = True
        if time.monotonic() > deadline:
            raise StorageError(f"study {study.study_name!r} was not set up within {timeout:.0f}s",
                               field="--study", fix="start the worker that created the study again, "
                                                    "or use a new --study name")
        time.sleep(poll)


def space_of(study: optuna.Study, train: list[Example]) -> SearchSpace | ProgramSpace:
    attrs = study._storage.get_study_user_attrs(study._study_id)
    return space_from_description(attrs[ATTR + "space"], train)

class _Heartbeat:
    """Writes a timestamp on the running trial every ``interval`` seconds (shared storages)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_system_attr(self.trial_id, ATTR + "hb", time.time())
            except Exception:
                return  # finished or storage gone: nothing to keep alive

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
