"""``optimize(task)``: the whole run, phase by phase (one module each under ``optimizer.run``).

1. inputs: load and split the data (leakage removed and reported), open the LM backends and
   the evaluator, check them; then the run directory and the study (``run.inputs``);
2. build the candidate space: instruction pool (proposers) x demo pool (selectors) (``run.space``);
3. search it with Optuna on the validation split (``run.trials``, ``search.Search``);
4. score the seed prompt and the winner on the held-out test split, with 95%
   bootstrap intervals and a paired bootstrap test of the difference (``run.heldout``);
5. write the summary and the run directory (``run.summary``, ``rundir.RunDir``).

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

import time
from typing import Callable

from .errors import BudgetExceeded
from .run.context import RunContext
from .run.heldout import score_held_out
from .run.inputs import default_run_dir, load_inputs, make_evaluator, open_run_dir, open_study, resolve_lm
from .run.options import RunOptions, RunResult, check_options, check_run_dir
from .run.plan import plan
from .run.space import candidate_space
from .run.summary import Outcome, best_so_far, write_result
from .run.trials import run_search
from .run.verdict import confirm, mark_winner, promote, random_kshot
from .task import TaskSpec

__all__ = ["RunOptions", "RunResult", "default_run_dir", "make_evaluator", "optimize", "plan", "resolve_lm"]


def optimize(task: TaskSpec, options: RunOptions | None = None,
             on_event: Callable[..., None] | None = None) -> RunResult:
    opts = options or RunOptions()
    t_start = time.perf_counter()
    n_trials = opts.trials or task.optimizer.trials
    limits = check_options(opts, n_trials)
    check_run_dir(opts)
    ctx = RunContext(task, opts, on_event or (lambda *a, **k: None), t_start=t_start, limits=limits,
                     seed=task.optimizer.seed if opts.seed is None else opts.seed, n_trials=n_trials)
    try:
        load_inputs(ctx)  # everything that can be wrong is checked before the run directory is touched
        open_run_dir(ctx)
        return _run(ctx)
    finally:
        ctx.close()


def _run(ctx: RunContext) -> RunResult:
    """The phases in the run directory. A budget stops the run with the best result so far (validation
    scores only); anything else marks the run directory interrupted or failed and goes on up."""
    try:
        open_study(ctx)
        candidate_space(ctx)
        best_trial, best = run_search(ctx)
        best_trial, best, confirmation = confirm(ctx, best_trial, best)  # the top 3 on a fresh sample
        best_trial, best, promotion = promote(ctx, best_trial, best)  # it must beat the label prior
        confirmation = mark_winner(ctx, confirmation, best_trial, best)
        baseline = ctx.space.seed_candidate()
        held = score_held_out(ctx, baseline, best, random_kshot(ctx, baseline, best))
    except BudgetExceeded as exc:
        ctx.evaluator.close(wait=True)  # calls still in flight finish and are accounted before the summary
        return write_result(ctx, best_so_far(ctx, str(exc.message)))
    except KeyboardInterrupt:
        ctx.run.write_json("status.json", {"status": "interrupted", "wall_seconds": ctx.wall_seconds()})
        raise
    except BaseException:
        ctx.run.write_json("status.json", {"status": "failed", "wall_seconds": ctx.wall_seconds()})
        raise
    return write_result(ctx, Outcome(baseline, best, best_trial, held=held, promotion=promotion,
                                     confirmation=confirmation))
