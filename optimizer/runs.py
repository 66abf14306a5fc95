"""``optimize runs``: the runs (and benches) under a directory, newest first.

A run is a directory with ``status.json`` and ``task.resolved.yaml`` (``optimize``); a bench is one
with ``bench.json`` (``optimize bench``). For each: name, kind, task, date (when it started: the
time ``task.resolved.yaml`` / ``bench.json`` was first written, from the directory name's
timestamp when it has one), status (``running``, ``failed``, ``interrupted``, ``stopped``,
``finished``; ``running (no process)`` when the run's ``.lock`` is held by no process, i.e. it was
killed), best score (validation and
test of the winner; for a bench, the best candidate's mean), the seed prompt's test score and the
LM. Nothing is written.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

_STAMP = re.compile(r"(\d{8}-\d{6})$")


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _started(d: Path, marker: Path) -> float:
    m = _STAMP.search(d.name)
    if m:
        try:
            return time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
        except ValueError:
            pass
    try:
        return marker.stat().st_mtime
    except OSError:
        return d.stat().st_mtime


def _abandoned(d: Path) -> bool:
    """A ``running`` run whose process is gone: its ``.lock`` exists and nobody holds it (checked, not taken:
    a shared lock is tried and dropped at once, and the file is never created)."""
    import fcntl
    import os

    try:
        fd = os.open(d / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False  # held: the run is alive
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _run_entry(d: Path) -> dict[str, Any]:
    status = (_read_json(d / "status.json") or {}).get("status", "unknown")
    if status == "running" and _abandoned(d):
        status = "running (no process)"
    summary = _read_json(d / "summary.json") or {}
    task, lm = summary.get("task"), (summary.get("lm") or {}).get("name")
    trials_req = None
    if not task or not lm:
        try:
            doc = yaml.safe_load((d / "task.resolved.yaml").read_text(encoding="utf-8")) or {}
            task = task or (doc.get("task") or {}).get("task")
            lm = lm or (doc.get("lm_profile") or {}).get("name")
            trials_req = ((doc.get("task") or {}).get("optimizer") or {}).get("trials")
        except (OSError, yaml.YAMLError):
            pass
    trials_done = 0
    if (d / "trials.jsonl").exists():
        try:
            trials_done = sum(1 for ln in (d / "trials.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip())
        except OSError:
            pass
    best, base = summary.get("best") or {}, summary.get("baseline") or {}
    started = _started(d, d / "task.resolved.yaml")
    return {"name": d.name, "path": str(d), "kind": "run", "task": task, "status": status,
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)), "started": started,
            "metric": summary.get("metric"), "best_val": best.get("val"), "best_test": best.get("test"),
            "best_test_ci": best.get("test_ci"), "baseline_test": base.get("test"),
            "gain_p_value": (summary.get("improvement") or {}).get("p_value"),
            "trials": (summary.get("trials") or {}).get("requested") or trials_req, "trials_done": trials_done,
            "lm": lm, "wall_seconds": summary.get("wall_seconds")}


def _bench_entry(d: Path) -> dict[str, Any]:
    doc = _read_json(d / "bench.json") or {}
    status = (_read_json(d / "status.json") or {}).get("status") or doc.get("status", "unknown")
    cfg = doc.get("config") or {}
    cands = doc.get("candidates") or []
    top = max(cands, key=lambda c: c.get("mean", float("-inf"))) if cands else {}
    started = cfg.get("started_at") or _started(d, d / "bench.json")
    return {"name": d.name, "path": str(d), "kind": "bench", "task": doc.get("task") or cfg.get("task"),
            "status": status, "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)), "started": started,
            "metric": doc.get("metric") or cfg.get("metric"), "best_val": None, "best_test": top.get("mean"),
            "best_test_ci": top.get("ci"), "baseline_test": cands[0].get("mean") if cands else None,
            "gain_p_value": None, "trials": len(cfg.get("candidates") or []), "trials_done": None,
            "lm": (cfg.get("lm") or {}).get("name"), "best_candidate": top.get("name"),
            "wall_seconds": doc.get("wall_seconds")}


def list_runs(root: str | Path, *, benches: bool = True) -> list[dict[str, Any]]:
    """Entries for every run (and bench) directory directly under ``root``, newest first. (No default
    folder: the command line chooses it, ``optimizer.cli.RUNS_DIR``.)"""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if (d / "bench.json").exists():
            if benches:
                out.append(_bench_entry(d))
        elif (d / "status.json").exists() and (d / "task.resolved.yaml").exists():
            out.append(_run_entry(d))
    out.sort(key=lambda e: (-e["started"], e["name"]))
    return out


def _f(x: Any) -> str:
    return "—" if x is None else f"{float(x):.3f}"


def table_rows(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "kind", "task", "date", "status", "best val", "best test [95% CI]", "seed test", "trials", "lm"]
    rows = []
    for e in entries:
        ci = e.get("best_test_ci")
        test = _f(e["best_test"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")
        if e["kind"] == "bench" and e.get("best_candidate"):
            test += f" ({e['best_candidate']})"
        if e["kind"] == "run":
            trials = f"{e['trials_done']}/{e['trials']}" if e.get("trials") else str(e.get("trials_done") or "—")
        else:
            trials = f"{e['trials']} candidates"
        rows.append([e["name"], e["kind"], str(e["task"] or "—"), e["date"], str(e["status"]), _f(e["best_val"]),
                     test, _f(e["baseline_test"]), trials, str(e["lm"] or "—")])
    return head, rows


def to_markdown(entries: list[dict[str, Any]]) -> str:
    head, rows = table_rows(entries)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_rich(entries: list[dict[str, Any]], root: str | Path):
    from rich.table import Table

    head, rows = table_rows(entries)
    t = Table(title=f"runs in {root}")
    for i, h in enumerate(head):
        t.add_column(h, justify="right" if h in ("best val", "seed test", "trials") else "left")
    for r in rows:
        t.add_row(*r)
    return t
