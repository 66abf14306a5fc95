"""What every ``optimize`` subcommand shares: the default output folder, the flags that several commands
take (declared once here; each command gives its own help text) and the mapping of errors to exit statuses.

Expected failures (``OptimizerError``) print one line on stderr and exit 2; ``--debug`` shows the
traceback instead. Ctrl-C (or SIGTERM, which ``optimize run`` turns into one) exits 130: finished work is
saved, and the same command again continues it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

# Where runs and benches go without --out, and where `optimize runs` looks: the library takes it as an
# option (RunOptions.runs_dir, BenchOptions.runs_dir, list_runs(root)); only the command line chooses it.
RUNS_DIR = Path("experiments") / "runs"

# The flags several subcommands take: their type and action live here, the help text with the command.
SHARED_FLAGS: dict[str, dict[str, Any]] = {
    "--lm": {},  # an LM profile: name (configs/lm/NAME.yaml) or path
    "--seed": {"type": int},
    "--out": {"type": Path},
    "--storage": {},  # an Optuna storage URL
    "--no-cache": {"action": "store_true"},
    "--cache-dir": {"type": Path},
    "--quiet": {"action": "store_true"},
    "--json": {"action": "store_true"},
    "--debug": {"action": "store_true"},
}

Handler = Callable[[argparse.Namespace], int]


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, help: str | None = None,
             **extra: Any) -> None:
    """Add the shared flag ``name`` to ``parser`` (a parser or a group), with this command's help text and
    any per-command extras (a ``default``, ``metavar``)."""
    parser.add_argument(name, **SHARED_FLAGS[name], help=help, **extra)


def guarded(handler: Handler, args: argparse.Namespace) -> int:
    """Run a subcommand's handler; an expected failure becomes one line on stderr and exit status 2."""
    from ..errors import OptimizerError

    try:
        return handler(args)
    except OptimizerError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are saved in the study; run the same command again to continue",
              file=sys.stderr)
        return 130
