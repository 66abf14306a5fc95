"""Where a trial is scored: one Optuna trial = one candidate walked over the validation examples.

A trial asks the sampler for its candidate, walks the validation examples in its order (seeded by its
slot, or the study's one shared order under halving), reports every example's score to Optuna so that
racing can stop it early, and ends in a record (the line of trials.jsonl) and the user attributes the
study keeps. Trials that survive have seen the whole validation split; their mean is the objective.
Pruned trials keep their partial mean as a user attribute.

Failures: calls that fail after the backend's retries are counted per trial and not reported (never
scored 0). A trial with more than ``max_failure_rate`` of its validation examples failed ends "failed"
(the worker marks it FAIL and retries its slot).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Callable, Protocol

import optuna

from ..data import Example
from ..evaluate import Evaluator, is_degenerate
from ..lm.base import LMCallFailed
from ..program import Candidate
from ..scoring import BATCH, offsets_to_json
from .attrs import ATTR
from .space import SearchSpace


class TrialHost(Protocol):
    """What a trial reads from the search that runs it (``worker.Search``)."""

    space: SearchSpace
    evaluator: Evaluator
    validation: list[Example]  # what trials are scored on: the validation split, then cross-fitted examples
    n_validation: int  # how many of them are the validation split itself
    seed: int
    shared_order: list[int] | None
    readout_after: int
    weights: list[float] | None
    max_failure_rate: float
    call_cap: int | None
    capped: bool  # set here when a trial reaches the cap
    on_event: Callable[..., None]

    def spent_calls(self) -> int: ...


class TrialRun:
    """One trial from its proposal to its record: ``TrialRun(search, trial, slot).run()``."""

    def __init__(self, host: TrialHost, trial: optuna.Trial, slot: int):
        self.host = host
        self.trial = trial
        self.slot = slot
        self.cand = host.space.suggest(trial)
        # joint readouts: the same responses scored under every label readout; the first readout_after
        # examples choose the one the trial reports (racing cannot prune before them), and a trial that
        # completes keeps the readout with the best mean over the whole split
        # batch calibration needs the whole split's label scores first: read once the trial completes
        self.joint = host.space.joint_readouts
        cand = self.cand
        self.readouts = [cand] + ([dataclasses.replace(cand, scoring=sc, origin={**cand.origin, "scoring": sc})
                                   for sc in host.space.scorings if sc != cand.scoring and sc != BATCH]
                                  if self.joint else [])
        self.per: dict[str, list[float]] = {c.scoring: [] for c in self.readouts}
        self.chosen = cand.scoring if len(self.readouts) == 1 else None
        self.steps: list[int] = []  # the step of each scored example
        self.scored: list[int] = []  # its index in the validation split
        self.reported = 0  # of them, how many went to the trial (under the chosen readout)
        self.order = host.shared_order if host.shared_order is not None else self._own_order()
        self.parse_failures = self.failed = self.attempted = 0
        self.last_error: str | None = None
        self.pruned = self.too_many = False

    def _own_order(self) -> list[int]:
        order = list(range(len(self.host.validation)))
        random.Random(f"{self.host.seed}:trial:{self.slot}").shuffle(order)
        return order

    def run(self) -> tuple[dict[str, Any], float]:
        """Walk, settle the readout, record; returns (record, mean of the reported scores)."""
        host = self.host
        usage0 = host.evaluator.backend.usage
        t0 = time.perf_counter()
        spent_before = host.spent_calls() if host.call_cap is not None else 0
        host.on_event("trial_start", number=self.trial.number, slot=self.slot, params=self.trial.params)
        self._walk(usage0, spent_before)
        scores = self._settle()
        used = host.evaluator.backend.usage - usage0
        mean = sum(scores) / len(scores) if scores else float("nan")
        rec = self._record(scores, mean, used, t0)
        self._annotate(rec, scores, mean)
        return rec, mean

    # -- phase 1: walk the examples ------------------------------------------------------
    def _walk(self, usage0: Any, spent_before: int) -> None:
        """Score the examples in order until the end, a prune, too many failed calls or the call cap."""
        host = self.host
        allowed = math.floor(host.max_failure_rate * len(self.order))
        gen = host.evaluator.stream(self.cand, [host.validation[i] for i in self.order], tolerate_failures=True)
        try:
            for pos, (idx, out) in enumerate(zip(self.order, gen)):
                self.attempted += 1
                if out.failed:
                    self.failed += 1
                    self.last_error = out.error
                    if self.failed > allowed:
                        self.too_many = True
                        break
                    continue
                self._score(pos, idx, out)
                if self._report_and_prune() or self._out_of_budget(usage0, spent_before):
                    break
        finally:
            gen.close()

    def _weight(self, idx: int) -> float:
        return 1.0 if self.host.weights is None else self.host.weights[idx]

    def _score(self, pos: int, idx: int, out: Any) -> None:
        """Keep one example's score under every readout still in play."""
        host = self.host
        w = self._weight(idx)
        self.per[self.cand.scoring].append(out.score * w)
        for other in list(self.readouts[1:]):  # no LM call: the response is the one just scored
            try:
                self.per[other.scoring].append(host.evaluator.run_one(other, host.validation[idx]).score * w)
            except LMCallFailed:  # its calibration call failed: this trial reads the first readout
                self.readouts.remove(other)
                del self.per[other.scoring]
        self.parse_failures += int(not out.parsed)
        self.steps.append(idx if host.shared_order is None else pos)
        self.scored.append(idx)
        host.on_event("example", number=self.trial.number)

    def _report_and_prune(self) -> bool:
        """Report what is new under the chosen readout (once there is one); True: the pruner stops the trial."""
        if self.chosen is None and (len(self.steps) >= self.host.readout_after or len(self.per) == 1):
            self.chosen = _best_readout(self.per)
        if self.chosen is None:
            return False
        self.reported = _report(self.trial, self.per[self.chosen], self.steps, self.reported)
        self.pruned = self.trial.should_prune()
        return self.pruned

    def _out_of_budget(self, usage0: Any, spent_before: int) -> bool:
        host = self.host
        if host.call_cap is None or self.attempted >= len(self.order):
            return False
        if spent_before + (host.evaluator.backend.usage - usage0).calls < host.call_cap:
            return False
        self.pruned = host.capped = True  # out of search budget: cut short, never the winner
        return True

    # -- phase 2: settle the readout -----------------------------------------------------
    def _settle(self) -> list[float]:
        """Choose the readout the trial keeps, report what is left; returns its scores."""
        host = self.host
        completed = not self.pruned and not self.too_many and bool(self.scored)
        if completed and self.joint and BATCH in host.space.scorings:  # no LM call: offsets off the same scores
            batch = host.evaluator.with_batch_offsets(self.cand, [host.validation[i] for i in self.scored])
            self.per[BATCH] = [host.evaluator.run_one(batch, host.validation[i]).score * self._weight(i)
                               for i in self.scored]
            self.readouts.append(batch)
        if self.chosen is None or (completed and len(self.per) > 1):
            self.chosen = _best_readout(self.per, prefer=self.chosen)
        # what a trial cut short before choosing has left
        _report(self.trial, self.per[self.chosen], self.steps, self.reported)
        self.cand = next(c for c in self.readouts if c.scoring == self.chosen)
        return self.per[self.chosen]

    # -- phase 3: the record -------------------------------------------------------------
    def _record(self, scores: list[float], mean: float, used: Any, t0: float) -> dict[str, Any]:
        """The trial's line in trials.jsonl (the means beside a weighted or cross-fitted objective included)."""
        cand, trial = self.cand, self.trial
        state = "failed" if (self.too_many or not scores) else "pruned" if self.pruned else "complete"
        rec = {"trial": trial.number, "slot": self.slot, "params": dict(trial.params), "state": state,
               "score": round(mean, 6) if scores else None, "examples": len(scores), "failed_calls": self.failed,
               "parse_failures": self.parse_failures, "lm_calls": used.calls, "cache_hits": used.cache_hits,
               "retries": used.retries, "prompt_tokens": used.prompt_tokens,
               "completion_tokens": used.completion_tokens, "seconds": round(time.perf_counter() - t0, 3),
               "instruction_origin": cand.origin.get("instruction_origin"),
               "demo_selector": cand.origin.get("demo_selector"),
               "prompt_words": self.host.evaluator.prompt_tokens(cand)}
        self._side_means(rec, scores)
        if scores and self._degenerate():
            rec["degenerate"] = True
            trial.set_user_attr("degenerate", True)
        if len(self.per) > 1:
            rec["readouts"] = {k: round(sum(v) / len(v), 6) if v else None for k, v in self.per.items()}
            rec["readout"] = self.chosen
            trial.set_user_attr(ATTR + "readout", self.chosen)
        if cand.offsets:
            trial.set_user_attr(ATTR + "offsets", offsets_to_json(cand.offsets))
        if state == "failed":
            rec["error"] = self.last_error
        if self.host.capped and self.pruned:
            rec["cut_by_budget"] = True
        return rec

    def _side_means(self, rec: dict[str, Any], scores: list[float]) -> None:
        """The plain means beside the objective: ``metric_mean`` when it is weighted, ``val_mean`` (the
        validation split's part alone) when it is cross-fitted (memoised: no LM call)."""
        host, cand, trial, scored = self.host, self.cand, self.trial, self.scored
        if host.weights is not None and scores:  # the objective is weighted: the plain mean beside it (memoised)
            rec["metric_mean"] = round(sum(host.evaluator.run_one(cand, host.validation[i]).score
                                           for i in scored) / len(scored), 6)
            trial.set_user_attr("metric_mean", rec["metric_mean"])
        if host.n_validation < len(host.validation):  # cross-fitted: the validation split's plain mean beside it
            own = [host.evaluator.run_one(cand, host.validation[i]).score for i in scored if i < host.n_validation]
            rec["val_mean"] = round(sum(own) / len(own), 6) if own else None
            rec["crossfit_examples"] = len(scored) - len(own)
            if own:
                trial.set_user_attr("val_mean", rec["val_mean"])

    def _degenerate(self) -> bool:
        """One answer on 90% or more of the validation examples the trial saw (memoised: no LM call)."""
        host = self.host
        answers = [host.evaluator.answer(host.evaluator.run_one(self.cand, host.validation[i]))
                   for i in self.scored if i < host.n_validation]
        return is_degenerate(answers)

    def _annotate(self, rec: dict[str, Any], scores: list[float], mean: float) -> None:
        """The user attributes the study keeps (the winner's ranking and a resume read them)."""
        trial = self.trial
        trial.set_user_attr("candidate_key", self.cand.key)
        trial.set_user_attr("examples", len(scores))
        trial.set_user_attr("failed_calls", self.failed)
        if scores:
            trial.set_user_attr("partial_mean", mean)
        trial.set_user_attr("prompt_words", rec["prompt_words"])
        trial.set_user_attr(ATTR + "record", rec)


def _best_readout(per: dict[str, list[float]], prefer: str | None = None) -> str:
    """The readout with the highest mean so far (ties: ``prefer``, then the first one)."""
    names = list(per)

    def mean(n: str) -> float:
        return sum(per[n]) / len(per[n]) if per[n] else -math.inf
    return max(names, key=lambda n: (round(mean(n), 9), n == prefer, -names.index(n)))


def _report(trial: optuna.Trial, scores: list[float], steps: list[int], start: int) -> int:
    """Reports ``scores[start:]`` under their steps; returns how many are reported now."""
    for j in range(start, len(steps)):
        trial.report(scores[j], steps[j])
    return len(steps)
