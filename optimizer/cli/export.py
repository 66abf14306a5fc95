"""``optimize export``: a run's winner in a production format, with a parity check.

    optimize export RUN_DIR --format openai-chat|completion|yaml|dspy --out FILE
                    [--endpoint URL [--model NAME] | --lm PROFILE] [--sample N]
    optimize export RUN_DIR --verify FILE [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ._common import add_flag

NAME = "export"


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(NAME, help="export a run's winner for production, with a parity check")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--format", dest="fmt", choices=("openai-chat", "completion", "yaml", "dspy"))
    add_flag(e, "--out", help="the file to write")
    e.add_argument("--verify", type=Path, metavar="FILE", help="check an existing export instead of writing one")
    e.add_argument("--endpoint", help="OpenAI-compatible base URL for the parity check (default: start a llama.cpp "
                                      "server on loopback for local runs, the run's endpoint otherwise)")
    e.add_argument("--model", help="model name at --endpoint (default: the artifact's)")
    add_flag(e, "--lm", help="an LM profile (backend openai) whose endpoint and key to use for the check")
    e.add_argument("--sample", type=int, default=50, help="test examples in the parity check (default 50)")
    add_flag(e, "--seed", default=0)
    e.add_argument("--min-agreement", type=float, default=0.9,
                   help="fail when fewer parsed answers than this fraction equal the optimizer's (default 0.9)")
    add_flag(e, "--json", help="print the parity report as JSON")
    add_flag(e, "--debug")


def handle(args: argparse.Namespace) -> int:
    from ..export import export_run, verify_export

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
