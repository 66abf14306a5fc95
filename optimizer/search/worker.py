"""The worker loop: a ``Search`` claims the study's open slots one by one, runs each as a trial
(``trial.TrialRun``) and records it, until every slot is finished.

Slots: the study holds exactly ``n_trials`` slots, enqueued up front as WAITING
trials (slot 0 is the seed prompt, or with ``start: demos`` or ``knn`` slot 0 is the seed
instruction with demos and slot 1 the seed prompt; ``demos+knn`` runs both start trials, then the
seed prompt as slot 2). A worker claims the lowest open slot
atomically (WAITING -> RUNNING is a compare-and-set in every Optuna storage), so
several processes on one storage (PostgreSQL, MySQL, a journal file, Redis)
never run a slot twice and never lose one. A trial whose process died (RUNNING with no heartbeat, or any
RUNNING trial in a run directory we hold the lock of) is marked FAIL and its
slot re-enqueued with the same parameters. A trial that ends "failed" (too many failed calls) is marked
FAIL and its slot retried; a slot that fails ``max_slot_attempts`` times stops the run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..data import Example
from ..evaluate import Evaluator
from ..lm.base import LMCallFailed
from ..program import Candidate
from .attrs import ATTR
from .protocol import _Heartbeat
from .racing import shared_validation_order
from .sampling import trial_slot
from .space import SearchSpace
from .trial import TrialRun
from .winner import pareto_front, pick_best

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Search:
    """Runs the study's open slots against an Evaluator and records them."""

    def __init__(self, study: optuna.Study, space: SearchSpace, evaluator: Evaluator, validation: list[Example],
                 *, seed: int, on_event: Callable[..., None] | None = None,
                 trial_log: Callable[[dict[str, Any]], None] | None = None, exclusive: bool = True,
                 worker_id: str | None = None, max_failure_rate: float = 0.1, max_slot_attempts: int = 3,
                 heartbeat: float = 5.0, grace: float = 60.0, poll: float = 1.0, call_cap: int | None = None,
                 shared_order: bool = False, stratify: bool = False, readout_after: int = 16,
                 weights: list[float] | None = None, n_validation: int | None = None):
        self.study = study
        self.storage = study._storage
        self.space = space
        self.evaluator = evaluator
        self.validation = validation
        self.seed = seed
        self.on_event = on_event or (lambda *a, **k: None)
        self.trial_log = trial_log or (lambda rec: None)
        self.exclusive = exclusive  # we hold the run directory's lock: no other process runs this study
        self.worker_id = worker_id or uuid.uuid4().hex
        self.max_failure_rate = max_failure_rate
        self.max_slot_attempts = max_slot_attempts
        self.heartbeat = heartbeat
        self.grace = grace
        self.poll = poll
        self.call_cap = call_cap  # LM calls all trials together may make (None: no cap)
        # halving: every trial walks validation in one order (label-stratified with ``stratify``) and reports
        # example k of it at step k; else each trial has its own order and reports an example under its
        # index (Wilcoxon pairs by index)
        self.shared_order = (shared_validation_order(validation, seed, stratify=stratify) if shared_order
                             else None)
        self.readout_after = max(1, readout_after)  # examples that choose a joint-readout trial's readout
        # each validation example's weight in what a trial reports (the balanced objective); None: all 1
        self.weights = weights
        # ``validation`` is what trials are scored on: the validation split first, then (cross-fitting,
        # ``optimizer.crossfit``) training examples; a record's ``val_mean`` is the split's part alone
        self.n_validation = len(validation) if n_validation is None else n_validation
        self.capped = False  # the cap was reached: no further trial starts
        self._recovered = False

    # -- one trial (scored in trial.py) ---------------------------------------------------
    def _objective(self, trial: optuna.Trial, slot: int) -> tuple[dict[str, Any], float]:
        """Score one trial; returns (its record, the mean it reports)."""
        return TrialRun(self, trial, slot).run()

    def _run_slot(self, frozen: optuna.trial.FrozenTrial) -> dict[str, Any]:
        tid = frozen._trial_id
        slot = trial_slot(frozen)
        self.storage.set_trial_system_attr(tid, ATTR + "worker", self.worker_id)
        self.storage.set_trial_system_attr(tid, ATTR + "hb", time.time())
        hb = None if self.exclusive else _Heartbeat(self.storage, tid, self.heartbeat)
        self.study._thread_local.cached_all_trials = None
        try:
            trial = optuna.Trial(self.study, tid)
            try:
                rec, mean = self._objective(trial, slot)
            except BaseException as exc:  # budget, Ctrl-C, a fatal LM or metric error: give the slot back
                self._abandon(tid, slot, frozen, trial_params=self._params(tid), reason=type(exc).__name__)
                raise
        finally:
            if hb is not None:
                hb.stop()
        if rec["state"] == "complete":
            self.study.tell(trial, mean, skip_if_finished=True)
        elif rec["state"] == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self.trial_log(rec)
        self.on_event("trial_end", record=rec)
        if rec["state"] == "failed":
            attempts = int(frozen.user_attrs.get(ATTR + "slot_failures", 0)) + 1
            self._enqueue(slot, rec["params"], attempts)
            if attempts >= self.max_slot_attempts:
                raise LMCallFailed(f"trial slot {slot} failed {attempts} times: more than "
                                   f"{self.max_failure_rate:.0%} of its LM calls failed after retries "
                                   f"(last: {rec.get('error')})", field="base_url",
                                   fix="check the endpoint, lower --concurrency, then run the same command "
                                       "again to continue")
        return rec

    def _params(self, trial_id: int) -> dict[str, Any]:
        try:
            return dict(self.storage.get_trial(trial_id).params)
        except Exception:
            return {}

    def _enqueue(self, slot: int, params: dict[str, Any], slot_failures: int = 0) -> None:
        params = self.space.fixed_params(slot) or params
        attrs: dict[str, Any] = {ATTR + "slot": slot}
        if slot_failures:
            attrs[ATTR + "slot_failures"] = slot_failures
        self.study.enqueue_trial(params, user_attrs=attrs)

    def _abandon(self, trial_id: int, slot: int, frozen: optuna.trial.FrozenTrial, *, trial_params: dict[str, Any],
                 reason: str) -> None:
        try:
            self.storage.set_trial_user_attr(trial_id, ATTR + "abandoned", reason)
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                self._enqueue(slot, trial_params, int(frozen.user_attrs.get(ATTR + "slot_failures", 0)))
        except Exception:
            pass  # the process is going down; recovery on the next start re-enqueues the slot

    # -- slots ---------------------------------------------------------------------------
    def _recover(self) -> None:
        """Fail trials whose process died and give their slots back."""
        first = not self._recovered
        self._recovered = True
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.system_attrs.get(ATTR + "worker")
            if self.exclusive:
                dead = first
            elif first and owner == self.worker_id:
                dead = True  # this run directory's previous process (we hold its lock now)
            else:
                hb = t.system_attrs.get(ATTR + "hb")
                if hb is None and t.datetime_start is not None:
                    hb = t.datetime_start.timestamp()
                dead = hb is not None and now - float(hb) > self.grace
            if not dead:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, ATTR + "abandoned", "process died")
                ok = self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                ok = False
            if ok:  # we won the transition: we own the replacement
                self._enqueue(trial_slot(t), dict(t.params), int(t.user_attrs.get(ATTR + "slot_failures", 0)))
                self.on_event("recovered", number=t.number, slot=trial_slot(t))
        if self.exclusive:
            self._fill_missing()

    def _fill_missing(self) -> None:
        n = self.n_trials
        trials = self.study.get_trials(deepcopy=False)
        covered = {trial_slot(t) for t in trials if t.state in FINISHED + (TrialState.RUNNING, TrialState.WAITING)}
        for k in range(n):
            if k in covered:
                continue
            failed = [t for t in trials if trial_slot(t) == k and t.state == TrialState.FAIL]
            last = max(failed, key=lambda t: t.number) if failed else None
            self._enqueue(k, dict(last.params) if last else {},
                          int(last.user_attrs.get(ATTR + "slot_failures", 0)) if last else 0)

    @property
    def n_trials(self) -> int:
        setup = self.study.user_attrs.get(ATTR + "setup") or {}
        return int(setup.get("n_trials", 0))

    def _claim(self, until: int | None = None) -> optuna.trial.FrozenTrial | None:
        trials = self.study.get_trials(deepcopy=False)
        done = {trial_slot(t) for t in trials if t.state in FINISHED}
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING and (until is None or trial_slot(t) < until)),
                         key=lambda t: (trial_slot(t), t.number))
        for t in waiting:
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if trial_slot(t) in done:
                # a slot re-enqueued twice by racing recoveries: it already has a result
                self.storage.set_trial_user_attr(t._trial_id, ATTR + "abandoned", "duplicate slot")
                self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                continue
            return self.storage.get_trial(t._trial_id)
        return None

    def run(self, until: int | None = None) -> None:
        """Run open slots until every slot of the study is finished (waiting for other workers' trials);
        ``until``: only the slots below it (a reflection round comes next, ``optimizer.run.reflect``)."""
        told_waiting = False
        while True:
            self._recover()
            if self.call_cap is not None and (self.capped or self.spent_calls() >= self.call_cap):
                self.capped = True
                return
            frozen = self._claim(until)
            if frozen is not None:
                told_waiting = False
                self._run_slot(frozen)
                continue
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return
            if not told_waiting:
                self.on_event("waiting", what=f"{len(running)} trial(s) running in other workers")
                told_waiting = True
            time.sleep(self.poll)

    # -- results -------------------------------------------------------------------------
    def spent_calls(self) -> int:
        """LM calls (cache hits included) of the trials that ran to an end, in any process."""
        return sum(int(r.get("lm_calls", 0)) for r in self.records())

    def records(self) -> list[dict[str, Any]]:
        """One record per trial that ran to an end (complete, pruned, failed), in slot order."""
        recs = [t.user_attrs[ATTR + "record"] for t in self.study.get_trials(deepcopy=False)
                if ATTR + "record" in t.user_attrs and t.state.is_finished()]
        return sorted(recs, key=lambda r: (r.get("slot", r["trial"]), r["trial"]))

    def best(self, pick: str = "best") -> tuple[optuna.trial.FrozenTrial, Candidate]:
        """The winner: the highest objective (ties: the higher plain mean, then the higher mean on the
        validation split itself, then the shorter prompt, then the earlier slot); with
        ``pick="shortest"``, the shortest prompt whose mean lies within the best's 95% interval."""
        complete = [t for t in self.study.trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise RuntimeError("no trial completed")
        best = pick_best(complete, pick)
        return best, self.candidate_for(best)

    def pareto(self) -> list[dict[str, Any]]:
        """Complete trials not dominated in (validation mean up, prompt words down), shortest first."""
        return pareto_front([t for t in self.study.trials if t.state == TrialState.COMPLETE])

    def candidate_for(self, trial: optuna.trial.FrozenTrial) -> Candidate:
        return self.space.of_trial(trial)
