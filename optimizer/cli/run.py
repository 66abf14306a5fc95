"""The ``optimize`` command: a thin face over the library.

    optimize TASK.yaml [--trials N] [--seed S] [--out DIR] [--lm PROFILE] [--debug]
                       [--concurrency N] [--max-calls N] [--max-tokens N] [--max-cost X] [--dry-run]
                       [--search-calls N] [--preset NAME]
                       [--storage URL --study NAME] [--new]
    optimize validate TASK.yaml

Expected failures (``OptimizerError``) print one line on stderr and exit 2;
``--debug`` shows the traceback instead. A run stopped by a budget writes the
best result so far and exits 3; Ctrl-C (or SIGTERM) stops after writing state
and exits 130; the same command again continues the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import traceback
from pathlib import Path

COMMANDS = ("run", "validate", "bench", "export", "report", "runs")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optimize", description="Optimize a prompt for a task defined in YAML.")
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="optimize a task (the default command)")
    run.add_argument("task", help="path to task.yaml")
    run.add_argument("--trials", type=int, help="number of Optuna trials (default: task optimizer.trials)")
    run.add_argument("--seed", type=int, help="seed for the search (default: task optimizer.seed)")
    run.add_argument("--out", type=Path, help="run directory (default: experiments/runs/<task>-<time>)")
    run.add_argument("--lm", help="LM profile name (configs/lm/NAME.yaml) or path; overrides the task's")
    run.add_argument("--storage", help="Optuna storage URL (default: sqlite in the run directory)")
    run.add_argument("--study", help="study name in the storage")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the LM response cache")
    run.add_argument("--cache-dir", type=Path, help="LM cache directory (default: $OPTIMIZER_CACHE_DIR or "
                                                   "~/.cache/prompt-optimizer)")
    run.add_argument("--concurrency", type=int, help="LM calls in flight for a remote backend (default 8; adapts "
                                                    "down on 429s and timeouts); the local model is sequential")
    run.add_argument("--max-calls", type=int, help="budget: paid (non-cached) LM calls of this run directory, "
                                                  "over all restarts")
    run.add_argument("--max-tokens", type=int, help="budget: paid prompt + completion tokens")
    run.add_argument("--preset", help="optimizer preset: configs/optimizer/NAME.yaml or a path; its settings replace "
                                      "the task file's `optimizer:` keys it names")
    run.add_argument("--search-calls", type=int, help="LM calls (cache hits included) the search may make before "
                                                     "the test report; then the best so far is reported")
    run.add_argument("--max-cost", type=float, help="budget: cost at configs/prices.yaml (or the profile's) prices")
    run.add_argument("--max-failure-rate", type=float, default=0.1,
                     help="a trial with more LM calls failed after retries than this fraction is marked failed "
                          "(default 0.1)")
    run.add_argument("--dry-run", action="store_true", help="print the projected calls, tokens and cost; call nothing")
    run.add_argument("--new", action="store_true", help="without --out: start a new run directory instead of "
                                                       "continuing an unfinished run of the same command")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--json", action="store_true", help="print summary.json to stdout at the end")
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    val = sub.add_parser("validate", help="check a task file (schema, data files, columns, labels, metric, LM profile)")
    val.add_argument("task")
    val.add_argument("--lm", help="LM profile to check instead of the task's")
    val.add_argument("--debug", action="store_true")
    from .cli_tools import add_commands  # bench, export, report, runs

    add_commands(sub)
    return p


def _argv(argv: list[str]) -> list[str]:
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        return ["run", *argv]
    return argv


def cmd_validate(args: argparse.Namespace) -> int:
    from .data import load_raw, make_splits, source_overlap
    from .engine import resolve_lm
    from .metrics import build_metric
    from .task import load_task

    task = load_task(args.task)
    raw = load_raw(task)
    splits = make_splits(task, raw)
    build_metric(task)
    profile = resolve_lm(task, args.lm)
    overlap = source_overlap(task, raw)
    sizes = splits.sizes()
    print(f"{args.task}: ok · task {task.task} v{task.version} · train {sizes['train']} · validation "
          f"{sizes['validation']} · test {sizes['test']} · metric {task.metric.name} · lm {profile.name} "
          f"({profile.backend})")
    if overlap:
        print("  inputs shared between source splits: " + ", ".join(f"{k} {v}" for k, v in overlap.items()))
    searched_splits = splits.with_validation_of(task.optimizer.min_validation)
    searched = searched_splits.sizes()
    if searched != sizes:
        print(f"  optimizer.min_validation: the search scores {searched['validation']} validation examples, "
              f"{searched['validation'] - sizes['validation']} of them from the end of train "
              f"({searched['train']} stay as the demo pool)")
    if task.optimizer.objective == "balanced":
        if task.objective == "balanced":
            counts = collections.Counter(e.output for e in searched_splits.validation)
            print("  optimizer.objective: balanced: each label weighs the same on validation ("
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
        else:
            print("  optimizer.objective: balanced needs a label set (output.labels or metric.labels): "
                  "trials maximise the mean")
    removed = {k: v for k, v in splits.leakage.items() if v}
    if removed:
        print("  removed from later splits as duplicates: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
    return 0


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


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    from rich.console import Console

    from .engine import RunOptions, optimize, plan
    from .progress import ProgressLine, summary_table
    from .task import apply_preset, load_task

    task = load_task(args.task)
    if args.preset:
        task = apply_preset(task, args.preset)
    opts = RunOptions(trials=args.trials, seed=args.seed, out=args.out, lm=args.lm, storage=args.storage,
                      study=args.study, cache=not args.no_cache, cache_dir=args.cache_dir,
                      concurrency=args.concurrency, max_calls=args.max_calls, max_tokens=args.max_tokens,
                      max_cost=args.max_cost, max_failure_rate=args.max_failure_rate, resume=not args.new,
                      search_calls=args.search_calls)
    if args.dry_run:
        projected = plan(task, opts)
        if args.json:
            print(json.dumps(projected, indent=2))
        else:
            _print_plan(projected)
        return 0
    console = Console(stderr=True)
    progress = ProgressLine(console, enabled=not args.quiet and console.is_terminal)
    plain = not args.quiet and not console.is_terminal

    def on_event(kind: str, **data):
        if kind == "phase" and plain and data["name"] != "data":  # inputs are checked first: a bad one is
            console.print(f"[{data['name']}]", highlight=False)   # then the only line on stderr
        if kind == "resume" and not args.quiet:
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

    def on_term(signum, frame):  # `kill PID`: stop like Ctrl-C, after writing state
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with progress:
            result = optimize(task, opts, on_event=on_event)
    finally:
        signal.signal(signal.SIGTERM, previous)
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


def main(argv: list[str] | None = None) -> int:
    from .errors import OptimizerError

    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(_argv(raw))
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from .cli_tools import HANDLERS

        if args.command in HANDLERS:
            return HANDLERS[args.command](args)
        return cmd_validate(args) if args.command == "validate" else cmd_run(args)
    except OptimizerError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are saved in the study; run the same command again to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
