"""``optimize bench``: score candidate prompts on the same examples, with intervals and p-values.

    optimize bench TASK.yaml --candidates SPEC [SPEC ...] [--split test] [--limit N] [--repeats R]
                   [--lm PROFILE] [--out DIR] [--format terminal|markdown|json|csv]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from ._common import RUNS_DIR, add_flag

NAME = "bench"


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(NAME, help="score candidate prompts on the same examples, with intervals and p-values")
    b.add_argument("task", help="path to task.yaml")
    b.add_argument("--candidates", nargs="+", required=True, metavar="SPEC",
                   help="[NAME=]FILE|RUN_DIR[#baseline]: candidates files, exports or run directories; the first is "
                        "the reference")
    b.add_argument("--split", default="test", choices=("train", "validation", "test"), help="default: test")
    b.add_argument("--limit", type=int, help="only the first N examples of the split")
    b.add_argument("--repeats", type=int, default=1, help="answers per example under sampled decoding (default 1)")
    add_flag(b, "--lm", help="LM profile name or path; overrides the task's")
    add_flag(b, "--out", help=f"bench directory (default: {RUNS_DIR}/bench-<task>-<hash>)")
    b.add_argument("--format", default="terminal", choices=("terminal", "markdown", "json", "csv"),
                   help="what to print on stdout (the bench directory always gets all of them)")
    add_flag(b, "--seed", help="seed of the bootstrap resampling", default=0)
    b.add_argument("--timing-calls", type=int, default=8,
                   help="uncached calls per candidate timed for the latency column (default 8)")
    add_flag(b, "--no-cache")
    add_flag(b, "--cache-dir")
    add_flag(b, "--quiet")
    add_flag(b, "--debug")


def _event_printer(err, quiet: bool, live: bool) -> Callable[..., None]:
    """Progress on stderr: a line per phase, then the scored calls (in place on a terminal, else by quarters)."""
    state = {"last": -1.0}

    def on_event(kind: str, **data: Any) -> None:
        if quiet:
            return
        if kind == "phase" and data.get("name") == "bench":
            err.print(f"[bench] {data['total']} calls to score"
                      + (f", {data['resumed']} already in the bench directory" if data.get("resumed") else ""),
                      highlight=False)
        elif kind == "phase" and str(data.get("name", "")).startswith("timing"):
            err.print(f"[{data['name']}] uncached calls for the latency column", highlight=False)
        elif kind == "result":
            frac = data["done"] / max(1, data["total"])
            if live:
                err.print(f"\r{data['name']}: {data['done']}/{data['total']}", end="", highlight=False)
            elif frac - state["last"] >= 0.25 or data["done"] == data["total"]:
                state["last"] = frac
                err.print(f"  {data['done']}/{data['total']} ({data['name']})", highlight=False)

    return on_event


def _print_doc(doc: dict, fmt: str) -> None:
    from rich.console import Console

    from ..bench import to_csv, to_markdown, to_rich

    if fmt == "terminal":
        Console(width=None if sys.stdout.isatty() else 200).print(to_rich(doc))
    elif fmt == "markdown":
        print(to_markdown(doc))
    elif fmt == "json":
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(to_csv(doc))


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..bench import BenchOptions, run_bench
    from ..task import load_task

    task = load_task(args.task)
    err = Console(stderr=True, markup=False, highlight=False)
    live = not args.quiet and err.is_terminal
    opts = BenchOptions(split=args.split, limit=args.limit, repeats=args.repeats, lm=args.lm, out=args.out,
                        runs_dir=RUNS_DIR, seed=args.seed, cache=not args.no_cache, cache_dir=args.cache_dir,
                        timing_calls=args.timing_calls)
    res = run_bench(task, args.candidates, opts, on_event=_event_printer(err, args.quiet, live))
    if live:
        err.print("")
    for note in res.notes:
        err.print(f"note: {note}", highlight=False)
    _print_doc(res.doc, args.format)
    if not args.quiet:
        err.print(f"bench directory: {res.bench_dir}", highlight=False)
    return 0
