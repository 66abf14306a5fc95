"""Run a benchmark suite: every (task, seed, method) of ``experiments/suites.yaml``'s suite NAME.

    python3 experiments/run.py --suite classification --dry-run       # list the jobs, run nothing
    .venv/bin/python experiments/run.py --suite classification          # run the jobs without a row
    .venv/bin/python experiments/run.py --suite gsm8k --only gsm8k:1 --method mipro_light
    .venv/bin/python experiments/run.py --tables                        # only remake the tables
    .venv/bin/python experiments/run.py --suite instruct --tables       # only remake that suite's tables

Each job runs ``compare.run_method`` (the methods are described there) and appends its row, with
provenance (``rows.provenance``), to ``OUT/rows.jsonl``. A job whose newest row is of the task's current
version is done and skipped, so the same command continues a cut-short run; ``--rerun-before UTC`` runs
again the jobs whose newest row is older than UTC (rows from before provenance count as older), and the
new rows supersede the old ones in the tables. After the jobs, the tables are made
(``make_tables.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import rows as rowsfile  # noqa: E402

SUITES = ROOT / "experiments" / "suites.yaml"
DEFAULT_SIZES = {"train": 200, "val": 100, "test": 300}


# -- suites ---------------------------------------------------------------------------------------------

def load_suites(path: Path = SUITES) -> dict[str, dict]:
    """Every suite of the file, with the file's ``defaults`` filled in (sizes merged per task)."""
    doc = yaml.safe_load(Path(path).read_text())
    defaults = doc.get("defaults") or {}
    out = {}
    for name, spec in (doc.get("suites") or {}).items():
        missing = {"tasks", "seeds", "methods"} - set(spec)
        if missing:
            raise SystemExit(f"{path}: suite {name!r} lacks {', '.join(sorted(missing))}")
        suite = {**defaults, **spec, "name": name}
        suite["sizes"] = {**(defaults.get("sizes") or {}), **(spec.get("sizes") or {})}
        suite["timeouts"] = {**(defaults.get("timeouts") or {}), **(spec.get("timeouts") or {})}
        out[name] = suite
    return out


def load_defaults(path: Path = SUITES) -> dict:
    """The suites file's ``defaults`` (what a suite leaves out)."""
    return yaml.safe_load(Path(path).read_text()).get("defaults") or {}


def get_suite(name: str, path: Path = SUITES) -> dict:
    suites = load_suites(path)
    if name not in suites:
        raise SystemExit(f"unknown suite {name!r}: use one of {', '.join(suites)} ({path})")
    return suites[name]


def sizes_of(suite: dict, task: str) -> dict:
    """train / val / test limits of TASK in the suite (or in the file's ``defaults``)."""
    return {**DEFAULT_SIZES, **((suite.get("sizes") or {}).get(task) or {})}


def jobs(suite: dict, only: list[str] | None = None, methods: list[str] | None = None) -> list[tuple]:
    """The suite's (task, seed, method) jobs in run order; ``only`` keeps "task" or "task:seed" entries,
    ``methods`` keeps those methods."""
    def wanted(task, seed):
        return not only or task in only or f"{task}:{seed}" in only
    return [(t, s, m) for t in suite["tasks"] for s in suite["seeds"] for m in suite["methods"]
            if wanted(t, s) and (not methods or m in methods)]


def rows_path(suite: dict, out: str | None = None) -> Path:
    return ROOT / (out or suite["out"]) / "rows.jsonl"


def done_rows(rows: list[dict], rerun_before: str | None = None) -> dict[tuple, dict]:
    """The newest row of each key at its task's current version, less those older than ``rerun_before``."""
    newest = rowsfile.latest(rows, rowsfile.current_versions(rows))
    return {rowsfile.key(r): r for r in newest
            if rerun_before is None or ((r.get("provenance") or {}).get("utc") or "") >= rerun_before}


def describe(row: dict | None) -> str:
    if row is None:
        return "todo"
    prov = row.get("provenance") or {}
    when = prov.get("utc") or prov.get("note") or "before provenance"
    return f"done ({when}, test {row['test']:.3f})"


# -- running --------------------------------------------------------------------------------------------

def run_jobs(suite: dict, todo: list[tuple], out: Path, args) -> None:
    """Run the jobs (grouped by task, then seed) and append their rows to OUT/rows.jsonl."""
    import compare  # DSPy, the optimizer and the LM: only when something runs
    from types import SimpleNamespace

    from optimizer.data import make_splits
    from optimizer.engine import resolve_lm
    from optimizer.lm import ResponseCache
    from optimizer.task import load_task

    path = out / "rows.jsonl"
    # jobs run again under --rerun-before: an ``ours`` job starts a new run directory (the old one, which the
    # optimizer would resume and finish with its old trials, is moved aside)
    rows = rowsfile.load_rows(path)
    superseded = set(done_rows(rows)) - set(done_rows(rows, args.rerun_before))
    commit = rowsfile.git_commit()
    cache = ResponseCache(out / "lm-cache.sqlite")
    margs = SimpleNamespace(out=str(out), ours_trials=suite["ours_trials"], reflection_lm=suite["reflection_lm"],
                            lm=suite.get("lm"))
    for name in dict.fromkeys(t for t, _, _ in todo):
        task = load_task(ROOT / "tasks" / name / "task.yaml")
        size = sizes_of(suite, name)
        task.splits.train.limit, task.splits.validation.limit, task.splits.test.limit = (
            size["train"], size["val"], size["test"])
        splits = make_splits(task)
        profile = resolve_lm(task, suite.get("lm"))  # the suite's LM profile, else the task's
        for seed in dict.fromkeys(s for t, s, _ in todo if t == name):
            for method in [m for t, s, m in todo if (t, s) == (name, seed)]:
                if method == "majority" and not task.label_set:
                    print(f"{name} seed {seed} majority: skipped (not a classification task)", flush=True)
                    continue
                if method in suite["timeouts"]:
                    run_child(suite, name, seed, method, out, args)
                    continue
                budget = budget_of(rowsfile.load_rows(path), name, seed, suite["budget"])
                margs.fresh = (name, seed, method) in superseded
                row = compare.run_method(method, task, seed, splits, profile, cache, budget, margs)
                row = rowsfile.append_row(path, row, rowsfile.provenance(suite["name"], name, method, commit))
                print(f"{name} seed {seed} {method}: test {row['test']:.3f} {row['test_ci']} "
                      f"calls {row['task_lm_calls']} {row['seconds']}s", flush=True)


def budget_of(rows: list[dict], task: str, seed: int, default: int | None) -> int | None:
    """MIPROv2 light's task-LM calls of (task, seed) at the task's current version, else ``default``."""
    row = done_rows(rows).get((task, seed, "mipro_light"))
    return row["task_lm_calls"] if row else default


def run_child(suite: dict, task: str, seed: int, method: str, out: Path, args) -> None:
    """A job with a time limit runs in its own process, so that it can be stopped (it writes no row then)."""
    cmd = [sys.executable, __file__, "--suites", str(args.suites), "--suite", suite["name"], "--only",
           f"{task}:{seed}", "--method", method, "--out", str(out), "--no-tables", "--no-timeouts"]
    if args.rerun_before:
        cmd += ["--rerun-before", args.rerun_before]
    limit = suite["timeouts"][method]
    try:
        subprocess.run(cmd, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"{method} on {task} seed {seed}: stopped after {limit} s (no row)", flush=True)


# -- command line ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", help="a suite of --suites")
    ap.add_argument("--suites", default=str(SUITES), help="the suites file (default: experiments/suites.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="list the jobs and whether each has a row; run nothing")
    ap.add_argument("--only", nargs="+", metavar="TASK[:SEED]", help="keep these tasks or (task, seed) pairs")
    ap.add_argument("--method", nargs="+", dest="methods", metavar="METHOD", help="keep these methods")
    ap.add_argument("--out", help="the rows / cache / run directory (default: the suite's out)")
    ap.add_argument("--rerun-before", metavar="UTC",
                    help="run again the jobs whose newest row is older than this (e.g. 2026-12-06T00:00Z)")
    ap.add_argument("--tables", action="store_true",
                    help="only make the tables (make_tables.py): the suite's, or without --suite the comparison's")
    ap.add_argument("--no-tables", action="store_true", help="do not make the tables after the jobs")
    ap.add_argument("--no-timeouts", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tables and not args.suite:
        import make_tables
        return make_tables.main([])
    if not args.suite:
        raise SystemExit(f"--suite NAME is required: one of {', '.join(load_suites(Path(args.suites)))}")
    suite = get_suite(args.suite, Path(args.suites))
    out = ROOT / (args.out or suite["out"])
    if args.tables:  # the suite's own rows and verdict method (before: always the `compare` suite's tables)
        import make_tables
        make_tables.write_tables(out, ours=suite["ours"])
        return 0
    if args.no_timeouts:
        suite["timeouts"] = {}
    done = done_rows(rowsfile.load_rows(out / "rows.jsonl"), args.rerun_before)
    listed = jobs(suite, args.only, args.methods)
    todo = [j for j in listed if j not in done]
    if args.dry_run:
        for task, seed, method in listed:
            print(f"{task}:{seed} {method:32} {describe(done.get((task, seed, method)))}")
        print(f"{len(listed)} jobs in suite {suite['name']!r}, {len(todo)} to run "
              f"(rows: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/rows.jsonl)")
        return 0
    run_jobs(suite, todo, out, args)
    if not args.no_tables:
        import make_tables
        make_tables.write_tables(out, ours=suite["ours"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
