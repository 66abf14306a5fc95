"""The comparison's rows file: one JSON line per finished (task, seed, method), appended, never rewritten.

Every row that ``experiments/run.py`` writes carries ``provenance``: the git commit it ran at (``+dirty``
when tracked files outside ``experiments/results`` had uncommitted changes), the preset file and the
sha256 of its bytes (first 12 hex digits) for ``ours@PRESET``, the task's ``version`` from its task.yaml,
the suite and the UTC time. Rows from before provenance have ``"commit": null`` and a ``note`` naming
the pass that wrote them, where it is known.

A row is superseded, not edited: when the tables are made, the newest row (the last in the file) of a
(task, seed, method) wins among the rows of the task's current version. Standard library and PyYAML
only, so that ``python3 experiments/run.py --dry-run`` needs no virtual environment.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: where an ``ours@NAME`` method finds its preset: the user presets first, then the ablations
PRESET_DIRS = (ROOT / "configs" / "optimizer", ROOT / "experiments" / "presets")


def preset_path(name: str) -> Path:
    """The preset file of ``ours@NAME``: ``configs/optimizer/NAME.yaml`` or ``experiments/presets/NAME.yaml``."""
    for d in PRESET_DIRS:
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").exists():
                return d / f"{name}{ext}"
    raise SystemExit(f"unknown preset {name!r}: not in {', '.join(str(d.relative_to(ROOT)) for d in PRESET_DIRS)}")


def preset_of(method: str) -> str | None:
    """``ours@NAME`` -> NAME; other methods use no preset."""
    return method.split("@", 1)[1] if method.startswith("ours@") else None


def task_version(task: str, root: Path = ROOT) -> int | None:
    """The ``version`` in ``tasks/TASK/task.yaml`` (None when the task or the key is missing)."""
    path = root / "tasks" / task / "task.yaml"
    return yaml.safe_load(path.read_text()).get("version") if path.exists() else None


def git_commit(root: Path = ROOT) -> str | None:
    """``git rev-parse HEAD``, with ``+dirty`` when tracked files (results aside) differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)experiments/results"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance(suite: str, task: str, method: str, commit: str | None, root: Path = ROOT) -> dict:
    """What a new row records about how it was made."""
    prov = {"commit": commit, "suite": suite, "task_version": task_version(task, root),
            "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    name = preset_of(method)
    if name:
        path = preset_path(name)
        prov["preset"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        prov["preset_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return prov


def append_row(path: Path, row: dict, prov: dict) -> dict:
    """Append ``row`` with its provenance to the rows file; returns the row as written."""
    row = {**row, "provenance": prov}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def load_rows(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def key(row: dict) -> tuple:
    return row["task"], row["seed"], row["method"]


def version_of(row: dict):
    return (row.get("provenance") or {}).get("task_version")


def latest(rows: list[dict], versions: dict | None = None) -> list[dict]:
    """The newest row of each (task, seed, method), in the file order of those rows. With ``versions``
    ({task: current version}), only rows of a task's current version count (a task not named: all)."""
    out: dict[tuple, dict] = {}
    for r in rows:
        current = (versions or {}).get(r["task"])
        if current is not None and version_of(r) != current:
            continue
        out.pop(key(r), None)
        out[key(r)] = r
    return list(out.values())


def current_versions(rows: list[dict], root: Path = ROOT) -> dict:
    """{task: its task.yaml version} for the tasks the rows name."""
    return {t: task_version(t, root) for t in sorted({r["task"] for r in rows})}
