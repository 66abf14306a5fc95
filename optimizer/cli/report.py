"""``optimize report RUN_DIR [--out FILE]``: a self-contained HTML report of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_flag

NAME = "report"


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(NAME, help="write a self-contained HTML report of a run")
    r.add_argument("run_dir", type=Path)
    add_flag(r, "--out", help="default: RUN_DIR/report.html")
    add_flag(r, "--debug")


def handle(args: argparse.Namespace) -> int:
    from ..report import build_report

    print(build_report(args.run_dir, args.out))
    return 0
