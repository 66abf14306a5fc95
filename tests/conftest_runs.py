"""One small real SST-2 run directory, shared by the bench, export, report and runs tests.

``tests/conftest.py`` exposes it as the session fixture ``sst2_run`` (so it is built once per
pytest session however many modules use it): the real embedded model, through the CLI, with
small splits (train 40, validation 24, test 60) and 4 trials. Its LM cache directory comes along,
so benches of the seed prompt and the winner on the test split are answered from the cache.
``OPTIMIZER_TEST_RUN_CACHE`` names a persistent directory to reuse the run across sessions
(development only; by default everything lives in pytest's temporary directory).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: a deliberately weak SST-2 prompt (asks another question; its demos answer yes/no)
WEAK_SST2 = ROOT / "experiments" / "bench_weak_sst2.yaml"


@dataclass
class SmallRun:
    run: Path
    task: Path
    cache: Path
    root: Path


def small_sst2_task(path: Path, *, sizes: tuple[int, int, int] = (40, 24, 60), **optimizer: object) -> Path:
    """The SST-2 task file with small splits (train, validation, test ``sizes``) and a small search;
    ``optimizer`` overrides the search settings."""
    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    for split, n in zip(("train", "validation", "test"), sizes):
        data["splits"][split]["limit"] = n
    for k, v in {"max_demos": 6, "demo_sets": 6, "instructions": 4, "bootstrap_examples": 12, **optimizer}.items():
        data["optimizer"][k] = v
    for split, f in data["dataset"]["files"].items():
        data["dataset"]["files"][split] = str(ROOT / "tasks/sst2" / f)
    path.write_text(yaml.safe_dump(data))
    return path


def build_sst2_run(tmp_path_factory) -> SmallRun:
    """The shared real-model SST-2 run the export, report and bench tests read, made under the mechanism
    tests' settings (generated answers and fixed demo sets, which every export format carries)."""
    from conftest import MECHANISM_SETTINGS, run_cli

    persistent = os.environ.get("OPTIMIZER_TEST_RUN_CACHE")
    root = Path(persistent) if persistent else tmp_path_factory.mktemp("sst2run")
    root.mkdir(parents=True, exist_ok=True)
    task = small_sst2_task(root / "task.yaml", **MECHANISM_SETTINGS)
    run, cache = root / "runs" / "sst2-small", root / "cache"
    status = run / "status.json"
    if not (status.exists() and json.loads(status.read_text()).get("status") == "finished"):
        r = run_cli(str(task), "--trials", "4", "--seed", "0", "--out", str(run), "--cache-dir", str(cache),
                    "--quiet", timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    return SmallRun(run=run, task=task, cache=cache, root=root)
