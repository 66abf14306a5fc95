"""The ``optimize`` command: a thin face over the library.

    optimize TASK.yaml [...]             same as ``optimize run TASK.yaml [...]`` (see run.py)
    optimize validate TASK.yaml
    optimize bench | export | report | runs ...

One module per subcommand (``add_parser`` declares its flags, ``handle`` runs it); _common.py holds what
they share: the default output folder ``RUNS_DIR``, the flags several commands take, and the error
handling. Expected failures (``OptimizerError``) print one line on stderr and exit 2; ``--debug`` shows
the traceback instead. A run stopped by a budget writes the best result so far and exits 3; Ctrl-C (or
SIGTERM) stops after writing state and exits 130; the same command again continues the run.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, export, report, run, runs, validate
from ._common import RUNS_DIR, Handler, guarded

_MODULES = (run, validate, bench, export, report, runs)  # the order `optimize --help` lists them in
COMMANDS = tuple(m.NAME for m in _MODULES)
HANDLERS: dict[str, Handler] = {m.NAME: m.handle for m in _MODULES}

__all__ = ["COMMANDS", "HANDLERS", "RUNS_DIR", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optimize", description="Optimize a prompt for a task defined in YAML.")
    sub = p.add_subparsers(dest="command")
    for module in _MODULES:
        module.add_parser(sub)
    return p


def _argv(argv: list[str]) -> list[str]:
    """``optimize TASK.yaml ...`` is ``optimize run TASK.yaml ...``."""
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        return ["run", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(_argv(raw))
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return guarded(HANDLERS[args.command], args)
