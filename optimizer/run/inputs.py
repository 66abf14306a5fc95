"""Phase 1, the inputs: data, LM backends, evaluator, and every check a bad input can fail, all before the
run directory is touched; then the run directory, its budget and the Optuna study."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import optuna

from .. import __version__
from ..budget import PRICES_FILE, Budget, load_prices
from ..data import Splits, search_splits, selection_examples
from ..errors import ConfigError, MetricError
from ..evaluate import Evaluator
from ..examples import Example
from ..lm import LMBackend, ResponseCache, create_backend, default_cache_dir, load_profile
from ..lm.profiles import LMProfile
from ..metrics import build_metric
from ..plugins import METRICS
from ..program import default_max_tokens
from ..rundir import RunDir, find_resumable, fingerprint
from ..scoring import BATCH, LABEL_READOUTS
from ..search import connect_study, open_storage, redact_url
from ..task import TaskSpec
from .context import RunContext


def resolve_lm(task: TaskSpec, ref: str | None) -> LMProfile:
    return load_profile(ref or task.lm, base_dirs=[task.base_dir, task.base_dir.parent, task.base_dir.parent.parent])


def judge_profile(task: TaskSpec) -> LMProfile:
    """The judge metric's LM profile (``metric.lm``); a missing one is one line naming ``metric.lm``."""
    try:
        return resolve_lm(task, task.metric.lm)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=exc.file or (str(task.path) if task.path else None), field="metric.lm",
                          fix=exc.fix) from None


def make_evaluator(task: TaskSpec, profile: LMProfile, backend: LMBackend) -> Evaluator:
    adapter = task.adapter if task.adapter != "auto" else profile.resolved_adapter
    if task.steps:  # a program of steps: one call per step (optimizer.steps)
        from ..steps import ProgramEvaluator

        return ProgramEvaluator(task, backend, build_metric(task), adapter=adapter,
                                profile_max_tokens=profile.max_tokens, temperature=profile.temperature)
    return Evaluator(task, backend, build_metric(task), adapter=adapter,
                     max_tokens=default_max_tokens(task, profile.max_tokens), temperature=profile.temperature)


def default_run_dir(task: TaskSpec, runs_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_dir / f"{task.task}-{stamp}"


def check_metric(evaluator: Evaluator, splits: Splits) -> None:
    """Score one gold answer against itself: a metric that cannot run fails here, before any LM call."""
    if evaluator.metric.needs_lm:  # the judge's LM is checked by its backend's preflight, not by a paid call
        return
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


def scorings_of(task: TaskSpec, evaluator: Evaluator, probe: Example | None = None) -> list[str]:
    """The readouts the search uses (``probe``: the example ``auto`` checks log-probabilities on). Batch
    calibration's offsets exist only once a trial has scored the whole validation split, so it is one of
    several joint label readouts (``auto`` leaves it out otherwise)."""
    scorings = evaluator.scorings(task.optimizer.scoring, probe)
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


def load_inputs(ctx: RunContext) -> None:
    """Data, backends, evaluator and their checks: everything that can be wrong fails here, touching nothing."""
    task, opts = ctx.task, ctx.opts
    ctx.emit("phase", name="data")
    ctx.splits = search_splits(task)
    _open_backends(ctx)
    ctx.prices = load_prices(ctx.profile)
    if ctx.limits.max_cost is not None and ctx.prices is None:
        raise ConfigError(f"no prices for model {ctx.profile.model!r}, so --max-cost cannot be enforced",
                          file=str(PRICES_FILE), field=f"models.{ctx.profile.model}",
                          fix="add the model's prompt_per_1k and completion_per_1k there or `prices:` to the "
                              "LM profile")
    for b in ctx.backends():
        b.set_concurrency(opts.concurrency or b.default_concurrency)
    ctx.evaluator = make_evaluator(task, ctx.profile, ctx.backend)
    if ctx.judge_backend is not None:
        ctx.evaluator.metric.attach(ctx.judge_backend)
    backend = ctx.backend
    ctx.emit("backend", usage=lambda: backend.usage)  # lets a progress display read live LM counters
    check_metric(ctx.evaluator, ctx.splits)
    if opts.preflight and opts.backend is None:
        for b in ctx.backends():
            b.preflight()
    ctx.scorings = scorings_of(task, ctx.evaluator)  # checked here; auto's probe waits for the budget (build_space)
    ctx.storage = open_storage(opts.storage) if opts.storage else None
    ctx.study_name = opts.study or f"{task.task}-seed{ctx.seed}"
    ctx.fingerprint = run_fingerprint(task, ctx.profile, ctx.seed, ctx.study_name, opts.storage)


def _open_backends(ctx: RunContext) -> None:
    """The task's backend (injected, or made from the LM profile with the response cache) and the proposer's
    (the same one unless ``optimizer.proposer_lm`` names another LM)."""
    task, opts = ctx.task, ctx.opts
    if opts.backend is not None:
        ctx.backend = opts.backend
        ctx.profile = ctx.backend.profile
    else:
        ctx.profile = resolve_lm(task, opts.lm)
        if opts.cache:
            ctx.cache = ResponseCache((opts.cache_dir or default_cache_dir()) / "lm-cache.sqlite")
        ctx.backend = create_backend(ctx.profile, cache=ctx.cache if ctx.cache is not None else False)
    ctx.proposer_backend = ctx.backend
    ctx.proposer_profile = ctx.profile
    if task.optimizer.proposer_lm and task.optimizer.proposer_lm != (opts.lm or task.lm):
        ctx.proposer_profile = resolve_lm(task, task.optimizer.proposer_lm)
        ctx.proposer_backend = create_backend(ctx.proposer_profile,
                                              cache=ctx.cache if ctx.cache is not None else False)
    if METRICS.get(task.metric.name).needs_lm:  # the judge: a backend of its own, its calls counted apart
        ctx.judge_backend = opts.judge_backend or create_backend(
            judge_profile(task), cache=ctx.cache if ctx.cache is not None else False)


def open_run_dir(ctx: RunContext) -> None:
    """The run directory (an unfinished one of the same run is continued) and the budget over its spend log."""
    opts = ctx.opts
    out = opts.out
    if out is None and opts.resume:
        out = find_resumable(opts.runs_dir, ctx.task.task, ctx.fingerprint)
    out = out or default_run_dir(ctx.task, opts.runs_dir)
    ctx.run = RunDir.open(out, ctx.fingerprint, {
        "task": ctx.task.task, "seed": ctx.seed, "study": ctx.study_name,
        "storage": redact_url(opts.storage) if opts.storage else "run directory", "optimizer_version": __version__})
    ctx.budget = Budget(ctx.limits, prices=ctx.prices, log_path=ctx.run.spend_log)
    for b in ctx.backends():
        b.budget = ctx.budget
    ctx.exclusive = opts.storage is None


def open_study(ctx: RunContext) -> None:
    """The Optuna study (in the run directory unless ``storage`` names a shared one), the task files, and
    the examples trials are scored on."""
    task, opts, run, splits = ctx.task, ctx.opts, ctx.run, ctx.splits
    if ctx.storage is None:
        ctx.storage = open_storage(run.study_url)
    ctx.study, created = connect_study(ctx.storage, ctx.study_name, ctx.seed, ctx.n_trials,
                                       prune=task.optimizer.prune, prune_p=task.optimizer.prune_p,
                                       min_examples=min(task.optimizer.min_examples, len(splits.validation)),
                                       url=opts.storage or run.study_url, racing=task.optimizer.racing,
                                       halving_rate=task.optimizer.halving_rate)
    if created:
        run.set_meta(creator=True)
    run.write_task(task, ctx.profile, seed=ctx.seed, trials=ctx.n_trials, splits=splits)
    if run.resumed:
        ctx.emit("resume", run_dir=str(run.path), finished=finished_trials(ctx.study), spent=ctx.budget.previous.calls)
    # what trials are scored on: validation, then the cross-fitted training examples (optimizer.crossfit)
    ctx.selection = selection_examples(task, splits, ctx.seed)


def finished_trials(study) -> int:
    """Trials of the study that ran to the end or were pruned."""
    S = optuna.trial.TrialState
    return sum(t.state in (S.COMPLETE, S.PRUNED) for t in study.get_trials(deepcopy=False))
