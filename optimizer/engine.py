"""``optimize(task)``: the whole run, phase by phase.

1. load and split the data (leakage removed and reported);
2. build the candidate space: instruction pool (proposers) x demo pool (selectors);
3. search it with Optuna on the validation split (``search.Search``);
4. score the seed prompt and the winner on the held-out test split, with 95%
   bootstrap intervals and a paired bootstrap test of the difference;
5. write the run directory (``rundir.RunDir``).

Everything a bad input can break (task, data, metric, LM profile, prices,
storage URL, endpoint, API key) is checked before the run directory is touched.

Scale and reliability:

- **Concurrency.** Remote backends evaluate a candidate's examples on a bounded
  thread pool (``concurrency``), adaptive to 429s and timeouts, with retries
  that honour ``Retry-After`` (``lm.base``). The local model stays sequential.
- **Budgets.** ``max_calls`` (paid calls), ``max_tokens`` and ``max_cost`` are
  reserved before every paid call (``budget.Budget``); when one is reached the
  run stops, writes the best result so far and ``summary["stopped"]`` says why.
- **Resume.** The study (slots, candidate space) and the response cache hold
  the state; running the same command again continues the same run directory
  and study, pays no answered call twice and ends with the same result.
- **Distributed.** Several processes with the same ``--storage`` and ``--study``
  share the slots of one study; the creator builds the candidate space, the
  others wait for it, and each one writes the final summary to its run directory.

The library never prints: progress goes to the ``on_event`` callback.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from . import __version__
from .budget import PRICES_FILE, Budget, Limits, cost_of, estimate_tokens, load_prices
from .data import Splits, search_splits, selection_examples
from .errors import BudgetExceeded, ConfigError, MetricError
from .evaluate import EvalResult, Evaluator
from .lm import LMBackend, ResponseCache, create_backend, default_cache_dir, load_profile
from .lm.base import LMCallFailed, LMRequest, Usage
from .lm.profiles import LMProfile
from .metrics import build_metric
from .program import Candidate, default_max_tokens
from .scoring import BATCH, LABEL_READOUTS, offsets_to_json
from .proposers import ProposalContext, instruction_pool
from .rundir import RunDir, find_resumable, fingerprint
from .search import (ATTR, Search, SearchSpace, balanced_weights, check_setup, connect_study, ensure_slots,
                     make_sampler, open_storage, pick_best, publish_setup, redact_url, setup_startup, space_of,
                     startup_trials, study_setup, trial_slot, wait_setup)
from .selectors import BootstrapSelector, SelectionContext, demo_pool, fill_pool
from .stats import bootstrap_ci, paired_bootstrap
from .task import TaskSpec


@dataclass
class RunOptions:
    trials: int | None = None
    seed: int | None = None
    out: Path | None = None
    lm: str | None = None  # profile name or path; overrides task.lm
    storage: str | None = None  # Optuna storage URL; default sqlite in the run directory
    study: str | None = None
    cache: bool = True
    cache_dir: Path | None = None
    backend: LMBackend | None = None  # inject a ready backend (tests, library use); overrides lm/cache
    concurrency: int | None = None  # calls in flight for a remote backend (default: backend.default_concurrency)
    max_calls: int | None = None  # paid (non-cached) LM calls of the run directory, over all restarts
    max_tokens: int | None = None  # paid prompt + completion tokens
    max_cost: float | None = None  # at the prices of configs/prices.yaml or the profile's `prices`
    # LM calls (cache hits included) before the test report: proposer, probes, bootstrap and trials; when
    # reached, no further trial starts (a running one is cut) and the best so far is reported on test
    search_calls: int | None = None
    max_failure_rate: float = 0.1  # a trial with more failed calls (after retries) than this is marked failed
    resume: bool = True  # without --out: continue the newest unfinished run directory of the same run
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


def resolve_lm(task: TaskSpec, ref: str | None) -> LMProfile:
    return load_profile(ref or task.lm, base_dirs=[task.base_dir, task.base_dir.parent, task.base_dir.parent.parent])


def make_evaluator(task: TaskSpec, profile: LMProfile, backend: LMBackend) -> Evaluator:
    adapter = task.adapter if task.adapter != "auto" else profile.resolved_adapter
    return Evaluator(task, backend, build_metric(task), adapter=adapter,
                     max_tokens=default_max_tokens(task, profile.max_tokens), temperature=profile.temperature)


def default_run_dir(task: TaskSpec) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("experiments") / "runs" / f"{task.task}-{stamp}"


def _check_options(opts: RunOptions, n_trials: int) -> Limits:
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


def _check_metric(evaluator: Evaluator, splits: Splits) -> None:
    """Score one gold answer against itself: a metric that cannot run fails here, before any LM call."""
    ex = splits.train[0] if splits.train else splits.validation[0]
    value = evaluator.metric(ex, {evaluator.task.output.name: ex.output})
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise MetricError(f"metric {evaluator.metric.name} returned {value!r} for a correct answer",
                          file=str(evaluator.task.path), field="metric", fix="return a float or bool")


def data_fingerprint(splits: Splits) -> str:
    return hashlib.sha256(json.dumps(splits.ids(), sort_keys=True).encode()).hexdigest()[:16]


def run_fingerprint(task: TaskSpec, profile: LMProfile, seed: int, study: str, storage: str | None) -> str:
    resolved = task.resolved()
    resolved.get("optimizer", {}).pop("trials", None)  # more trials extend a run, they do not make a new one
    return fingerprint({"task": resolved, "seed": seed, "lm": profile.public_dict(), "study": study,
                        "storage": redact_url(storage) if storage else None})


def _usage_zero() -> dict[str, int]:
    return Usage().to_dict()


def optimize(task: TaskSpec, options: RunOptions | None = None,
             on_event: Callable[..., None] | None = None) -> RunResult:
    opts = options or RunOptions()
    emit = on_event or (lambda *a, **k: None)
    t_start = time.perf_counter()
    seed = task.optimizer.seed if opts.seed is None else opts.seed
    n_trials = opts.trials or task.optimizer.trials
    limits = _check_options(opts, n_trials)

    # -- inputs: everything that can be wrong is checked before the run directory is touched ----
    emit("phase", name="data")
    splits: Splits = search_splits(task)
    cache = None
    if opts.backend is not None:
        backend = opts.backend
        profile = backend.profile
    else:
        profile = resolve_lm(task, opts.lm)
        if opts.cache:
            cache = ResponseCache((opts.cache_dir or default_cache_dir()) / "lm-cache.sqlite")
        backend = create_backend(profile, cache=cache if cache is not None else False)
    proposer_backend = backend
    if task.optimizer.proposer_lm and task.optimizer.proposer_lm != (opts.lm or task.lm):
        proposer_profile = resolve_lm(task, task.optimizer.proposer_lm)
        proposer_backend = create_backend(proposer_profile, cache=cache if cache is not None else False)
    else:
        proposer_profile = profile
    prices = load_prices(profile)
    if limits.max_cost is not None and prices is None:
        raise ConfigError(f"no prices for model {profile.model!r}, so --max-cost cannot be enforced",
                          file=str(PRICES_FILE), field=f"models.{profile.model}",
                          fix="add the model's prompt_per_1k and completion_per_1k there or `prices:` to the "
                              "LM profile")
    for b in {id(backend): backend, id(proposer_backend): proposer_backend}.values():
        b.set_concurrency(opts.concurrency or b.default_concurrency)
    evaluator = make_evaluator(task, profile, backend)
    emit("backend", usage=lambda: backend.usage)  # lets a progress display read live LM counters
    _check_metric(evaluator, splits)
    scorings = _scorings(task, evaluator)
    if opts.preflight and opts.backend is None:
        backend.preflight()
        if proposer_backend is not backend:
            proposer_backend.preflight()
    storage_obj = open_storage(opts.storage) if opts.storage else None
    study_name = opts.study or f"{task.task}-seed{seed}"
    fp = run_fingerprint(task, profile, seed, study_name, opts.storage)
    out = opts.out
    if out is None and opts.resume:
        out = find_resumable(Path("experiments") / "runs", task.task, fp)
    out = out or default_run_dir(task)

    # -- the run directory, the study ------------------------------------------------------------
    run = RunDir.open(out, fp, {"task": task.task, "seed": seed, "study": study_name,
                                "storage": redact_url(opts.storage) if opts.storage else "run directory",
                                "optimizer_version": __version__})
    budget = Budget(limits, prices=prices, log_path=run.spend_log)
    for b in {id(backend): backend, id(proposer_backend): proposer_backend}.values():
        b.budget = budget
    phases: dict[str, dict[str, int]] = {name: _usage_zero()
                                         for name in ("proposer", "probe", "bootstrap", "search", "test")}
    exclusive = opts.storage is None
    early_search = Usage()  # LM use of the slots that ran before the bootstrap teacher
    study = None
    search: Search | None = None
    space: SearchSpace | None = None
    status = "failed"
    try:
        if storage_obj is None:
            storage_obj = open_storage(run.study_url)
        study, created = connect_study(storage_obj, study_name, seed, n_trials, prune=task.optimizer.prune,
                                       prune_p=task.optimizer.prune_p,
                                       min_examples=min(task.optimizer.min_examples, len(splits.validation)),
                                       url=opts.storage or run.study_url, racing=task.optimizer.racing,
                                       halving_rate=task.optimizer.halving_rate)
        if created:
            run.set_meta(creator=True)
        run.write_task(task, profile, seed=seed, trials=n_trials, splits=splits)
        if run.resumed:
            done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                       for t in study.get_trials(deepcopy=False))
            emit("resume", run_dir=str(run.path), finished=done, spent=budget.previous.calls)

        # what trials are scored on: validation, then the cross-fitted training examples (optimizer.crossfit)
        selection = selection_examples(task, splits, seed)

        def make_search(space: SearchSpace, call_cap: int | None) -> Search:
            return Search(study, space, evaluator, selection, seed=seed, on_event=emit,
                          trial_log=run.append_trial, exclusive=exclusive, worker_id=run.meta["worker"],
                          max_failure_rate=opts.max_failure_rate, grace=opts.grace,
                          shared_order=task.optimizer.racing == "halving", stratify=bool(task.label_set),
                          readout_after=min(task.optimizer.min_examples, len(splits.validation)),
                          weights=balanced_weights(selection) if task.objective == "balanced" else None,
                          n_validation=len(splits.validation), call_cap=call_cap)

        # -- candidate space (the study's creator builds it; everyone else reads it) -----------
        data_id = data_fingerprint(splits)
        setup = study_setup(study)
        notes: dict[str, Any] = {}
        if setup is None and run.meta.get("creator"):
            emit("phase", name="instructions")
            u0 = proposer_backend.usage
            pctx = ProposalContext(task, splits.train, seed, proposer_backend,
                                   chat=proposer_profile.resolved_adapter == "chat", evaluator=evaluator,
                                   scoring=scorings[0])
            pool = instruction_pool(pctx, task.optimizer.instructions, task.optimizer.proposers)
            probe = pctx.notes.pop("probe_usage", None)
            proposer_used = proposer_backend.usage - u0
            if probe and proposer_backend is backend:  # the reflective probes ran the task prompt: task-LM calls
                proposer_used = proposer_used - Usage(**{k: v for k, v in probe.items() if k != "paid_calls"})
            phases["proposer"] = proposer_used.to_dict()
            if probe:
                phases["probe"] = probe
            if budget.tripped:  # the proposer swallows LM errors: do not publish a pool cut short by the budget
                raise BudgetExceeded(budget.tripped, field=budget.tripped.split()[0],
                                     fix="raise the budget and run the same command again to continue")

            emit("phase", name="demos")
            sctx = SelectionContext(splits.train, seed, labels=task.label_set, evaluator=evaluator,
                                    instruction=task.instruction, budget=task.optimizer.bootstrap_examples)
            max_demos = task.optimizer.max_demos
            # the pool with placeholders for the bootstrap teacher's sets, which need LM calls
            demos = demo_pool(sctx, task.optimizer.demo_sets, max_demos, task.optimizer.selectors,
                              later=True) if max_demos else []
            space = SearchSpace([(p.text, p.origin) for p in pool], demos, max_demos,
                                scorings, task.optimizer.demo_orders, task.optimizer.start,
                                task.optimizer.start_demos, task.optimizer.readouts != "searched")
            proposer_calls = sum(phases[k]["calls"] for k in ("proposer", "probe"))
            # the start trials need no bootstrapped set: with the run's own storage they run first, so the
            # first incumbent is scored that many calls sooner (the trials and the pool are the same)
            early = space.early_slots() if exclusive and any(not exs for _, exs in demos) else 0
            startup = task.optimizer.startup_trials or startup_trials(n_trials)
            if early:
                study.sampler = make_sampler(seed, startup)
                ensure_slots(study, space, early)
                reserve = BootstrapSelector.planned_calls(sctx, max_demos)  # the teacher still runs after them
                search = make_search(space, None if opts.search_calls is None
                                     else max(0, opts.search_calls - proposer_calls - reserve))
                u2 = backend.usage
                try:
                    search.run()
                finally:
                    early_search = backend.usage - u2
                    phases["search"] = early_search.to_dict()
            fixed = [space.fixed_params(k) for k in range(early)]
            u1 = backend.usage
            space.demo_sets = fill_pool(sctx, demos, max_demos)
            phases["bootstrap"] = (backend.usage - u1).to_dict()
            if [space.fixed_params(k) for k in range(early)] != fixed:
                raise RuntimeError("an early slot's candidate changed when the demo pool was filled")
            notes = {"proposer_notes": pctx.notes, "selector_notes": sctx.notes}
            setup = {"task": task.task, "seed": seed, "data": data_id, "n_trials": n_trials,
                     "validation": len(splits.validation), "optimizer_version": __version__,
                     "setup_calls": proposer_calls + phases["bootstrap"]["calls"],
                     # slots that ran before the bootstrap teacher (their calls are the search's)
                     "bootstrap_after_slots": early,
                     # fixed for every worker and every resumed process
                     "startup_trials": startup}
            publish_setup(study, space, setup)
        elif setup is None:
            setup = wait_setup(study, timeout=opts.setup_timeout, on_event=emit)
        check_setup(setup, task=task.task, seed=seed, data=data_id)
        if space is None:
            space = space_of(study, splits.train)
        if n_trials > int(setup["n_trials"]):  # a larger --trials extends the study
            setup = {**setup, "n_trials": n_trials}
            study.set_user_attr(ATTR + "setup", setup)
            ensure_slots(study, space, n_trials)
        n_trials = int(setup["n_trials"])
        study.sampler = make_sampler(seed, setup_startup(setup, n_trials))  # what the creator fixed
        if notes or not (run.path / "candidates.json").exists():
            run.write_json("candidates.json", {**space.describe(), **notes})

        # -- search ----------------------------------------------------------------------------
        emit("phase", name="search", trials=n_trials, validation=len(splits.validation),
             done=sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                      for t in study.get_trials(deepcopy=False)))
        search = make_search(space, None if opts.search_calls is None
                             else max(0, opts.search_calls - int(setup.get("setup_calls", 0))))
        u3 = backend.usage
        try:
            search.run()
        finally:
            phases["search"] = (backend.usage - u3 + early_search).to_dict()
            try:
                run.write_trials(search.records())
            except Exception:  # the storage itself failed: keep the live trials.jsonl, raise the first error
                pass
        best_trial, best = search.best(task.optimizer.pick)
        baseline = space.candidate(0, 0, 0, "generate")

        # -- held-out test -----------------------------------------------------------------------
        emit("phase", name="test", examples=len(splits.test))
        u4 = backend.usage
        base_val = _score(evaluator, baseline, splits.validation)
        best_val = _score(evaluator, best, splits.validation)
        base_test = _score(evaluator, baseline, splits.test, lambda o: emit("example", number=-1))
        best_test = _score(evaluator, best, splits.test, lambda o: emit("example", number=-2))
        phases["test"] = (backend.usage - u4).to_dict()
        status = "finished"
    except BudgetExceeded as exc:
        evaluator.close(wait=True)  # calls still in flight finish and are accounted before the summary
        result = _stopped(task, run, evaluator, study, search, space, splits, seed, n_trials, profile, budget,
                          backend, proposer_backend, phases, str(exc.message), t_start, emit)
        _close(opts, backend, proposer_backend, evaluator, run, storage_obj)
        return result
    except KeyboardInterrupt:
        run.write_json("status.json", {"status": "interrupted", "wall_seconds": round(time.perf_counter() - t_start, 3)})
        _close(opts, backend, proposer_backend, evaluator, run, storage_obj)
        raise
    except BaseException:
        run.write_json("status.json", {"status": "failed", "wall_seconds": round(time.perf_counter() - t_start, 3)})
        _close(opts, backend, proposer_backend, evaluator, run, storage_obj)
        raise

    backend_usage = backend.usage
    if proposer_backend is not backend:
        backend_usage = backend_usage + proposer_backend.usage
    base_ci = bootstrap_ci(base_test.scores, seed=seed)
    best_ci = bootstrap_ci(best_test.scores, seed=seed)
    diff = paired_bootstrap(base_test.scores, best_test.scores, seed=seed)

    def describe(c: Candidate, val_mean: float, test_ci, extra: dict[str, Any]) -> dict[str, Any]:
        return {"instruction": c.instruction, "instruction_origin": c.origin.get("instruction_origin"),
                "n_demos": c.knn or len(c.demos), "demo_ids": [d.id for d in c.demos],
                "demo_selector": c.origin.get("demo_selector"), **_scoring_fields(evaluator, c),
                "val": round(val_mean, 6),
                "test": round(test_ci.mean, 6), "test_ci": [round(test_ci.low, 6), round(test_ci.high, 6)],
                "prompt_words": evaluator.prompt_tokens(c), **extra}

    usage = backend_usage.to_dict()
    summary: dict[str, Any] = {
        "task": task.task,
        "task_version": task.version,
        "optimizer_version": __version__,
        "seed": seed,
        "lm": profile.public_dict(),
        "adapter": evaluator.adapter_kind,
        "program": task.program,
        "metric": evaluator.metric.name,
        "splits": splits.sizes(),
        "leakage_removed": splits.leakage,
        "trials": _trial_counts(study, n_trials),
        "baseline": describe(baseline, base_val.mean, base_ci, {}),
        "best": describe(best, best_val.mean, best_ci, {"trial": best_trial.number, "slot": trial_slot(best_trial),
                                                        "params": best_trial.params,
                                                        "objective_val": round(best_trial.value, 6)}),
        "objective": task.objective,
        "improvement": {k: round(v, 6) for k, v in diff.items()},
        "pick": task.optimizer.pick,
        "search_calls": {"cap": opts.search_calls, "reached": search.capped,
                         "spent": int(setup.get("setup_calls", 0)) + search.spent_calls()},
        "bootstrap_after_slots": int(setup.get("bootstrap_after_slots", 0)),
        "pareto": search.pareto(),
        "significant": (not best_ci.overlaps(base_ci)) and best_ci.mean > base_ci.mean,
        **_usage_fields(usage, phases, proposer_backend is backend),
        "failed_calls": sum(r.get("failed_calls", 0) for r in search.records()),
        "concurrency": backend.max_concurrency,
        "spent": budget.to_dict(),
        "study": {"name": study.study_name, "storage": redact_url(opts.storage) if opts.storage else "run directory",
                  "workers": len({t.system_attrs.get(ATTR + "worker") for t in study.get_trials(deepcopy=False)
                                  if t.system_attrs.get(ATTR + "worker")})},
        "resumed": run.resumed,
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "prompt": evaluator.prompt_text(best),
    }
    run.write_winner(task, best)
    run.write_text("prompt.txt", summary["prompt"] + "\n")
    run.write_text("baseline_prompt.txt", evaluator.prompt_text(baseline) + "\n")
    run.write_predictions("test_predictions.jsonl", splits.test, base_test, best_test)
    run.write_json("summary.json", summary)
    run.write_json("status.json", {"status": "finished", "wall_seconds": summary["wall_seconds"]})
    emit("done", summary=summary)
    _close(opts, backend, proposer_backend, evaluator, run, storage_obj)
    return RunResult(run.path, summary, baseline, best)


def _score(evaluator: Evaluator, cand: Candidate, examples: list, on_outcome=None) -> EvalResult:
    """Evaluate for the report: failed calls get one more round of retries, then stop the run."""
    res = evaluator.evaluate(cand, examples, on_outcome, tolerate_failures=True)
    if res.failed:
        res = evaluator.evaluate(cand, examples, tolerate_failures=True)  # answered ones are memoised
        if res.failed:
            err = next(o.error for o in res.outcomes if o.failed)
            raise LMCallFailed(f"{res.failed} of {len(examples)} report calls failed after retries ({err})",
                               field="base_url", fix="check the endpoint, then run the same command again to "
                                                     "continue (finished trials are kept)")
    return res


def _trial_counts(study, n_trials: int) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)] if study is not None else []
    S = optuna.trial.TrialState
    return {"requested": n_trials, "complete": states.count(S.COMPLETE), "pruned": states.count(S.PRUNED),
            "failed": states.count(S.FAIL)}


def _usage_fields(usage: dict[str, int], phases: dict[str, dict[str, int]], same_backend: bool) -> dict[str, Any]:
    return {"lm_calls": usage["calls"],
            "task_lm_calls": usage["calls"] - (phases["proposer"]["calls"] if same_backend else 0),
            "proposer_calls": phases["proposer"]["calls"],
            "cache_hits": usage["cache_hits"],
            "paid_calls": usage["paid_calls"],
            "retries": usage.get("retries", 0),
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "phases": phases}


def _scorings(task: TaskSpec, evaluator: Evaluator) -> list[str]:
    """The readouts the search uses. Batch calibration's offsets exist only once a trial has scored the
    whole validation split, so it is one of several joint label readouts (``auto`` leaves it out otherwise)."""
    scorings = evaluator.scorings(task.optimizer.scoring)
    if BATCH not in scorings:
        return scorings
    others = [s for s in scorings if s != BATCH]
    if task.optimizer.readouts != "searched" and others and all(s in LABEL_READOUTS for s in others):
        return scorings
    if BATCH not in task.optimizer.scoring:  # it came with auto
        return others
    raise ConfigError("scoring 'batch' is read jointly with another label readout once a trial has scored the "
                      "whole validation split", file=str(task.path), field="optimizer.scoring",
                      fix="list it with likelihood or calibrated (e.g. [likelihood, batch]) and keep readouts: joint")


def _scoring_fields(evaluator: Evaluator, c: Candidate) -> dict[str, Any]:
    """How the candidate's answers are read (exported with the prompt): generated text, or label likelihood
    with the calibration offsets it was scored with."""
    out: dict[str, Any] = {"scoring": c.scoring, "demo_order": c.origin.get("order", 0), "knn": c.knn}
    if c.scoring in ("calibrated", "batch"):
        out["calibration"] = offsets_to_json(tuple((evaluator.calibration(c) or {}).items()))
    return out


def _close(opts: RunOptions, backend: LMBackend, proposer_backend: LMBackend, evaluator: Evaluator,
           run: RunDir | None, storage: Any = None) -> None:
    evaluator.close()
    engine = getattr(storage, "engine", None)
    if engine is not None:
        # closing the pooled connections now checkpoints SQLite's WAL into study.db: the finished run
        # directory is self-contained, and no later garbage collection rewrites it behind our back
        engine.dispose()
    if opts.backend is None:
        backend.close()
    if proposer_backend is not backend:
        proposer_backend.close()
    backend.budget = None
    proposer_backend.budget = None
    if run is not None:
        run.release()


def _stopped(task: TaskSpec, run: RunDir, evaluator: Evaluator, study, search: Search | None,
             space: SearchSpace | None, splits: Splits, seed: int, n_trials: int, profile: LMProfile, budget: Budget,
             backend: LMBackend, proposer_backend: LMBackend, phases: dict[str, dict[str, int]], reason: str,
             t_start: float, emit: Callable[..., None]) -> RunResult:
    """A budget was reached: write the best result so far (validation scores only) and stop."""
    S = optuna.trial.TrialState
    if search is not None:
        run.write_trials(search.records())
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == S.COMPLETE] if study is not None else []
    if space is not None:
        baseline = space.candidate(0, 0, 0, "generate")
    else:
        baseline = Candidate(task.instruction.strip(), (), {"instruction": 0, "instruction_origin": "seed"})
    best, best_trial = baseline, None
    if complete and space is not None:
        best_trial = pick_best(complete, task.optimizer.pick)
        best = space.of_trial(best_trial)
    base_trial = next((t for t in complete if trial_slot(t) == 0), None)

    def describe(c: Candidate, trial) -> dict[str, Any]:
        return {"instruction": c.instruction, "instruction_origin": c.origin.get("instruction_origin"),
                "n_demos": c.knn or len(c.demos), "demo_ids": [d.id for d in c.demos],
                "demo_selector": c.origin.get("demo_selector"), **_scoring_fields(evaluator, c),
                "val": round(trial.value, 6) if trial is not None else None, "test": None, "test_ci": None,
                "prompt_words": evaluator.prompt_tokens(c),
                **({"trial": trial.number, "slot": trial_slot(trial), "params": trial.params} if trial else {})}

    usage = backend.usage if proposer_backend is backend else backend.usage + proposer_backend.usage
    summary: dict[str, Any] = {
        "task": task.task, "task_version": task.version, "optimizer_version": __version__, "seed": seed,
        "lm": profile.public_dict(), "adapter": evaluator.adapter_kind, "program": task.program,
        "metric": evaluator.metric.name, "splits": splits.sizes(), "leakage_removed": splits.leakage,
        "stopped": reason, "trials": _trial_counts(study, n_trials),
        "baseline": describe(baseline, base_trial), "best": describe(best, best_trial), "improvement": None,
        "significant": False, **_usage_fields(usage.to_dict(), phases, proposer_backend is backend),
        "concurrency": backend.max_concurrency, "spent": budget.to_dict(), "resumed": run.resumed,
        "wall_seconds": round(time.perf_counter() - t_start, 3), "prompt": evaluator.prompt_text(best),
    }
    run.write_winner(task, best)
    run.write_text("prompt.txt", summary["prompt"] + "\n")
    run.write_text("baseline_prompt.txt", evaluator.prompt_text(baseline) + "\n")
    run.write_json("summary.json", summary)
    run.write_json("status.json", {"status": "stopped", "reason": reason, "wall_seconds": summary["wall_seconds"]})
    emit("stopped", reason=reason, summary=summary)
    return RunResult(run.path, summary, baseline, best, {"stopped": reason})


# ----------------------------------------------------------------------------- dry run

def plan(task: TaskSpec, options: RunOptions | None = None) -> dict[str, Any]:
    """What a run would spend, projected without a single LM call: calls and tokens per phase (upper
    bounds: no pruning, cold cache), and the cost where prices are known."""
    from .proposers import LMProposer

    opts = options or RunOptions()
    seed = task.optimizer.seed if opts.seed is None else opts.seed
    n_trials = opts.trials or task.optimizer.trials
    limits = _check_options(opts, n_trials)
    splits = search_splits(task)
    profile = opts.backend.profile if opts.backend is not None else resolve_lm(task, opts.lm)
    prices = load_prices(profile)
    evaluator = make_evaluator(task, profile, None)  # renders prompts; never calls
    _check_metric(evaluator, splits)
    max_demos = task.optimizer.max_demos
    k = (max_demos + 1) // 2  # n_demos is drawn from 0..max_demos
    demos = tuple(splits.train[:k])

    def tokens(cand: Candidate, examples: list) -> int:
        total = 0
        for ex in examples:
            req = evaluator.request(cand, ex.inputs)
            total += estimate_tokens(req)[0]
        return total

    rows: dict[str, dict[str, Any]] = {}
    inst = task.optimizer.instructions
    if "lm" in task.optimizer.proposers and inst > 1 and splits.train:
        prop = LMProposer()
        want = max(1, (inst - 1) // 2)
        shots = splits.train[: prop.k]
        meta = LMRequest(prompt=prop._meta_prompt(task, shots), max_tokens=prop.max_tokens)
        calls = want * prop.drafts
        rows["proposer"] = {"calls": calls, "prompt_tokens": calls * estimate_tokens(meta)[0],
                            "completion_tokens": calls * prop.max_tokens}
    else:
        rows["proposer"] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    mt = evaluator.max_tokens
    if "bootstrap" in task.optimizer.selectors and max_demos:
        teach = Candidate(task.instruction, tuple(splits.train[: max(1, min(4, max_demos))]), {})
        pool = splits.train[len(teach.demos):][: task.optimizer.bootstrap_examples]
        rows["bootstrap"] = {"calls": len(pool), "prompt_tokens": tokens(teach, pool),
                             "completion_tokens": len(pool) * mt}
    else:
        rows["bootstrap"] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    typical = Candidate(task.instruction, demos, {})
    seed_c = Candidate(task.instruction, (), {})
    scored = selection_examples(task, splits, seed)
    rows["search"] = {"calls": n_trials * len(scored), "prompt_tokens": n_trials * tokens(typical, scored),
                      "completion_tokens": n_trials * len(scored) * mt}
    if opts.search_calls is not None:  # the search stops at the cap
        room = max(0, opts.search_calls - rows["proposer"]["calls"] - rows["bootstrap"]["calls"])
        if room < rows["search"]["calls"]:
            f = room / max(1, rows["search"]["calls"])
            rows["search"] = {k: int(v * f) for k, v in rows["search"].items()}
    # seed prompt and winner on test, and the seed prompt on validation for the report (a cache hit when
    # the seed trial ran complete with generated answers)
    n_report = 2 * len(splits.test) + len(splits.validation)
    rows["test"] = {"calls": n_report, "completion_tokens": n_report * mt,
                    "prompt_tokens": tokens(seed_c, splits.test) + tokens(typical, splits.test)
                    + tokens(seed_c, splits.validation)}
    total = {key: sum(r[key] for r in rows.values()) for key in ("calls", "prompt_tokens", "completion_tokens")}
    for r in list(rows.values()) + [total]:
        r["cost"] = round(cost_of(prices, r["prompt_tokens"], r["completion_tokens"]), 6) if prices else None
    return {"task": task.task, "lm": profile.name, "model": profile.model, "backend": profile.backend,
            "seed": seed, "trials": n_trials, "splits": splits.sizes(), "phases": rows, "total": total,
            "prices": prices.model_dump() if prices else None,
            "limits": {k2: v for k2, v in vars(limits).items() if v is not None},
            "notes": "upper bounds: every trial sees every validation (and cross-fitted) example (pruning lowers this) and no "
                     "response is cached yet; tokens are estimated from characters (about 3 per token)"}
