"""``optimize run`` (the default command: ``optimize TASK.yaml`` means ``optimize run TASK.yaml``).

    optimize TASK.yaml [--trials N] [--seed S] [--out DIR] [--lm PROFILE] [--debug]
                       [--concurrency N] [--max-calls N] [--max-tokens N] [--max-cost X] [--dry-run]
                       [--search-calls N] [--preset NAME]
                       [--storage URL --study NAME] [--new]

A run stopped by a budget writes the best result so far and exits 3; Ctrl-C (or SIGTERM) stops after
writing state and exits 130; the same command again continues the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from ._common import RUNS_DIR, add_flag

NAME = "run"


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(NAME, help="optimize a task (the default command)")
    run.add_argument("task", help="path to task.yaml")
    run.add_argument("--trials", type=int, help="number of Optuna trials (default: task optimizer.trials)")
    add_flag(run, "--seed", help="seed for the search (default: task optimizer.seed)")
    add_flag(run, "--out", help=f"run directory (default: {RUNS_DIR}/<task>-<time>)")
    add_flag(run, "--lm", help="LM profile name (configs/lm/NAME.yaml) or path; overrides the task's")
    add_flag(run, "--storage", help="Optuna storage URL (default: sqlite in the run directory)")
    run.add_argument("--study", help="study name in the storage")
    add_flag(run, "--no-cache", help="do not read or write the LM response cache")
    add_flag(run, "--cache-dir", help="LM cache directory (default: $OPTIMIZER_CACHE_DIR or "
                                      "~/.cache/prompt-optimizer)")
    run.add_argument("--concurrency", type=int, help="LM calls in flight for a remote backend (default 8; adapts "
                                                    "down on 429s and timeouts); the local model is sequential")
    run.add_argument("--max-calls", type=int, help="budget: paid (non-cached) LM calls of this run directory, "
                                                  "over all restarts")
    run.add_argument("--max-tokens", type=int, help="budget: paid prompt + completion tokens")
    run.add_argument("--preset", help="optimizer preset: configs/optimizer/NAME.yaml or a path; its settings replace "
                                      "the task file's `optimizer:` keys it names")
    run.add_argument("--search-calls", type=int, help="LM calls (cache hits included) before the test report: "
                     "setup, trials and the confirmation of the top candidates; the best so far is then reported")
    run.add_argument("--max-cost", type=float, help="budget: cost at configs/prices.yaml (or the profile's) prices")
    run.add_argument("--max-failure-rate", type=float, default=0.1,
                     help="a trial with more LM calls failed after retries than this fraction is marked failed "
                          "(default 0.1)")
    run.add_argument("--dry-run", action="store_true", help="print the projected calls, tokens and cost; call nothing")
    run.add_argument("--new", action="store_true", help="without --out: start a new run directory instead of "
                                                       "continuing an unfinished run of the same command")
    add_flag(run, "--quiet", help="no progress line")
    add_flag(run, "--json", help="print summary.json to stdout at the end")
    add_flag(run, "--debug", help="show tracebacks")


def _options(args: argparse.Namespace):
    from ..engine import RunOptions

    return RunOptions(trials=args.trials, seed=args.seed, out=args.out, runs_dir=RUNS_DIR, lm=args.lm,
                      storage=args.storage, study=args.study, cache=not args.no_cache, cache_dir=args.cache_dir,
                      concurrency=args.concurrency, max_calls=args.max_calls, max_tokens=args.max_tokens,
                      max_cost=args.max_cost, max_failure_rate=args.max_failure_rate, resume=not args.new,
                      search_calls=args.search_calls)


def _print_plan(plan: dict) -> None:
    def money(v):
        return "n/a (no prices)" if v is None else f"{v:.4f}"

    print(f"dry run: {plan['task']} on {plan['lm']} ({plan['backend']}, {plan['model']}), {plan['trials']} trials, "
          f"seed {plan['seed']}; no LM call was made")
    print(f"  {'phase':<10}{'calls':>10}{'prompt tokens':>16}{'completion tokens':>20}{'cost':>16}")
    for name, r in [*plan["phases"].items(), ("total", plan["total"])]:
        print(f"  {name:<10}{r['calls']:>10,}{r['prompt_tokens']:>16,}{r['completion_tokens']:>20,}"
              f"{money(r['cost']):>16}")
    if plan["limits"]:
        print("  budget: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in plan["limits"].items()))
    print(f"  ({plan['notes']})")


def _event_printer(console, progress, quiet: bool) -> Callable[..., None]:
    """The run's events on stderr: the live progress line on a terminal, plain lines otherwise."""
    plain = not quiet and not console.is_terminal

    def on_event(kind: str, **data: Any) -> None:
        if kind == "phase" and plain and data["name"] != "data":  # inputs are checked first: a bad one is
            console.print(f"[{data['name']}]", highlight=False)   # then the only line on stderr
        if kind == "resume" and not quiet:
            console.print(f"resuming {data['run_dir']}: {data['finished']} trial(s) already finished, "
                          f"{data['spent']} paid call(s) spent before", highlight=False)
        if kind == "waiting" and plain:
            console.print(f"waiting: {data['what']}", highlight=False)
        if kind == "trial_end" and plain:
            r = data["record"]
            score = "n/a" if r["score"] is None else f"{r['score']:.3f}"
            extra = f", {r['failed_calls']} failed calls" if r.get("failed_calls") else ""
            console.print(f"trial {r['trial']}: {r['state']} score {score} on {r['examples']} examples, "
                          f"{r['lm_calls']} calls{extra}, {r['seconds']:.1f}s", highlight=False)
        progress(kind, **data)

    return on_event


def _optimize_until_stopped(task, opts, progress, on_event):
    """``optimize`` with Ctrl-C and SIGTERM (``kill PID``) stopping it after writing state.

    A signal that lands inside a garbage-collection callback or a ``__del__`` is swallowed there (Python
    prints "Exception ignored" and goes on), so the handler also remembers it, and the next progress event
    raises it again from an ordinary frame; the swallowed one's message is not printed. SQLAlchemy logs one
    that lands while it returns a pooled connection ("Exception during reset or similar", with its
    traceback); that record is dropped too, any other of its warnings is printed as before."""
    import logging
    import signal
    import sys
    import threading

    from ..engine import optimize

    asked = {"stop": False, "raised_again": False}

    def on_signal(signum, frame):
        asked["stop"] = True
        raise KeyboardInterrupt

    def checked(*args, **kwargs):
        if asked["stop"] and not asked["raised_again"] and threading.current_thread() is threading.main_thread():
            asked["raised_again"] = True
            raise KeyboardInterrupt
        on_event(*args, **kwargs)

    def unraisable(u):
        if not (u.exc_type is not None and issubclass(u.exc_type, KeyboardInterrupt)):
            previous_hook(u)

    def not_the_interrupt(record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is not None
                    and issubclass(record.exc_info[0], KeyboardInterrupt))

    sql_log, sql_handler = logging.getLogger("sqlalchemy"), logging.StreamHandler(sys.stderr)
    sql_handler.setLevel(logging.WARNING)
    sql_handler.addFilter(not_the_interrupt)
    sql_log.addHandler(sql_handler)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        with progress:
            return optimize(task, opts, on_event=checked)
    finally:
        sql_log.removeHandler(sql_handler)
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..engine import plan
    from ..progress import ProgressLine, summary_table
    from ..task import apply_preset, load_task

    task = load_task(args.task)
    if args.preset:
        task = apply_preset(task, args.preset)
    opts = _options(args)
    if args.dry_run:
        projected = plan(task, opts)
        if args.json:
            print(json.dumps(projected, indent=2))
        else:
            _print_plan(projected)
        return 0
    console = Console(stderr=True)
    progress = ProgressLine(console, enabled=not args.quiet and console.is_terminal)
    result = _optimize_until_stopped(task, opts, progress, _event_printer(console, progress, args.quiet))
    if result.stopped:
        print(f"stopped: {result.stopped}; best result so far (validation only) in {result.run_dir}; raise the "
              f"budget and run the same command again to continue", file=sys.stderr)
        if args.json:
            print(json.dumps(result.summary, indent=2))
        return 3
    if not args.quiet:
        console.print(summary_table(result.summary))
        console.print(f"run directory: {result.run_dir}")
    if args.json:
        print(json.dumps(result.summary, indent=2))
    return 0
