"""The ``bench``, ``export``, ``report`` and ``runs`` subcommands of ``optimize`` (hooked into cli.py).

    optimize bench TASK.yaml --candidates SPEC [SPEC ...] [--split test] [--limit N] [--repeats R]
                   [--lm PROFILE] [--out DIR] [--format terminal|markdown|json|csv]
    optimize export RUN_DIR --format openai-chat|completion|yaml|dspy --out FILE
                    [--endpoint URL [--model NAME] | --lm PROFILE] [--sample N]
    optimize export RUN_DIR --verify FILE [...]
    optimize report RUN_DIR [--out FILE]
    optimize runs [--dir DIR] [--markdown | --json]

Errors are ``OptimizerError``s: cli.main prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .errors import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="score candidate prompts on the same examples, with intervals and p-values")
    b.add_argument("task", help="path to task.yaml")
    b.add_argument("--candidates", nargs="+", required=True, metavar="SPEC",
                   help="[NAME=]FILE|RUN_DIR[#baseline]: candidates files, exports or run directories; the first is "
                        "the reference")
    b.add_argument("--split", default="test", choices=("train", "validation", "test"), help="default: test")
    b.add_argument("--limit", type=int, help="only the first N examples of the split")
    b.add_argument("--repeats", type=int, default=1, help="answers per example under sampled decoding (default 1)")
    b.add_argument("--lm", help="LM profile name or path; overrides the task's")
    b.add_argument("--out", type=Path, help="bench directory (default: experiments/runs/bench-<task>-<hash>)")
    b.add_argument("--format", default="terminal", choices=("terminal", "markdown", "json", "csv"),
                   help="what to print on stdout (the bench directory always gets all of them)")
    b.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    b.add_argument("--timing-calls", type=int, default=8,
                   help="uncached calls per candidate timed for the latency column (default 8)")
    b.add_argument("--no-cache", action="store_true")
    b.add_argument("--cache-dir", type=Path)
    b.add_argument("--quiet", action="store_true")
    b.add_argument("--debug", action="store_true")

    e = sub.add_parser("export", help="export a run's winner for production, with a parity check")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--format", dest="fmt", choices=("openai-chat", "completion", "yaml", "dspy"))
    e.add_argument("--out", type=Path, help="the file to write")
    e.add_argument("--verify", type=Path, metavar="FILE", help="check an existing export instead of writing one")
    e.add_argument("--endpoint", help="OpenAI-compatible base URL for the parity check (default: start a llama.cpp "
                                      "server on loopback for local runs, the run's endpoint otherwise)")
    e.add_argument("--model", help="model name at --endpoint (default: the artifact's)")
    e.add_argument("--lm", help="an LM profile (backend openai) whose endpoint and key to use for the check")
    e.add_argument("--sample", type=int, default=50, help="test examples in the parity check (default 50)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--min-agreement", type=float, default=0.9,
                   help="fail when fewer parsed answers than this fraction equal the optimizer's (default 0.9)")
    e.add_argument("--json", action="store_true", help="print the parity report as JSON")
    e.add_argument("--debug", action="store_true")

    r = sub.add_parser("report", help="write a self-contained HTML report of a run")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--out", type=Path, help="default: RUN_DIR/report.html")
    r.add_argument("--debug", action="store_true")

    ls = sub.add_parser("runs", help="list past runs and benches: task, date, best score, status")
    ls.add_argument("--dir", type=Path, default=Path("experiments") / "runs", help="default: experiments/runs")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true")
    fmt.add_argument("--json", action="store_true")
    ls.add_argument("--no-benches", action="store_true", help="runs only")
    ls.add_argument("--debug", action="store_true")


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .bench import BenchOptions, run_bench, to_csv, to_markdown, to_rich
    from .task import load_task

    task = load_task(args.task)
    err = Console(stderr=True, markup=False, highlight=False)
    live = not args.quiet and err.is_terminal
    state = {"last": -1.0}

    def on_event(kind: str, **data) -> None:
        if args.quiet:
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

    opts = BenchOptions(split=args.split, limit=args.limit, repeats=args.repeats, lm=args.lm, out=args.out,
                        seed=args.seed, cache=not args.no_cache, cache_dir=args.cache_dir,
                        timing_calls=args.timing_calls)
    res = run_bench(task, args.candidates, opts, on_event=on_event)
    if live:
        err.print("")
    for note in res.notes:
        err.print(f"note: {note}", highlight=False)
    if args.format == "terminal":
        Console(width=None if sys.stdout.isatty() else 200).print(to_rich(res.doc))
    elif args.format == "markdown":
        print(to_markdown(res.doc))
    elif args.format == "json":
        print(json.dumps(res.doc, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(to_csv(res.doc))
    if not args.quiet:
        err.print(f"bench directory: {res.bench_dir}", highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run, verify_export

    common = dict(endpoint=args.endpoint, model=args.model, lm=args.lm, sample=args.sample, seed=args.seed,
                  min_agreement=args.min_agreement)
    if args.verify is not None:
        if args.fmt or args.out:
            raise ConfigError("--verify checks an existing file; it takes no --format or --out", field="--verify",
                              fix="drop --format/--out, or drop --verify to write a new export")
        report = verify_export(args.run_dir, args.verify, **common)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.line())
        return 0
    if not args.fmt or not args.out:
        raise ConfigError("export needs --format and --out", field="--format",
                          fix="e.g. optimize export RUN_DIR --format yaml --out prompt.yaml")
    report = export_run(args.run_dir, args.fmt, args.out, **common)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.line())
        print(f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    print(build_report(args.run_dir, args.out))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import list_runs, to_markdown, to_rich

    entries = list_runs(args.dir, benches=not args.no_benches)
    if args.json:
        print(json.dumps(entries, indent=2))
    elif args.markdown:
        print(to_markdown(entries))
    elif not entries:
        print(f"no runs in {args.dir}")
    else:
        from rich.console import Console

        Console(width=None if sys.stdout.isatty() else 200).print(to_rich(entries, args.dir))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bench": cmd_bench, "export": cmd_export, "report": cmd_report, "runs": cmd_runs}
