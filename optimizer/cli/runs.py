"""``optimize runs [--dir DIR] [--markdown | --json]``: past runs and benches, newest first."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import RUNS_DIR, add_flag

NAME = "runs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser(NAME, help="list past runs and benches: task, date, best score, status")
    ls.add_argument("--dir", type=Path, default=RUNS_DIR, help=f"default: {RUNS_DIR}")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true")
    add_flag(fmt, "--json")
    ls.add_argument("--no-benches", action="store_true", help="runs only")
    add_flag(ls, "--debug")


def handle(args: argparse.Namespace) -> int:
    from ..runs import list_runs, to_markdown, to_rich

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
