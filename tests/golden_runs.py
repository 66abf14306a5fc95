"""Golden outputs: the safety net for refactors that must not change behaviour.

Each case is one run whose ``summary.json``, ``trials.jsonl`` and ``candidates.json`` are kept under
``tests/golden/<case>/`` and compared byte for byte by ``tests/test_golden.py``. Only what differs
between two identical runs is taken out first (wall-clock times, the run directory's path, the
study's timestamps); every score, count, parameter, prompt and demo id stays.

The scripted cases run the SST-2 example task with small splits on :class:`fakes.ScriptedBackend`,
once with the task's own settings and once for each optimizer preset (user presets in
``configs/optimizer``, ablations in ``experiments/presets``). The ``real`` case runs the embedded
model with a response cache kept beside the goldens, so it is answered from that cache.

Regenerate (only when a change of behaviour is meant; say so in the commit):
``.venv/bin/python tests/golden_runs.py [CASE ...]``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
FILES = ("summary.json", "trials.jsonl", "candidates.json")
PRESET_DIRS = (ROOT / "configs" / "optimizer", ROOT / "experiments" / "presets")

#: the presets as they were when the goldens were made; a preset that moves keeps its name
PRESETS = ("fast", "small-model", "small-model-balanced", "small-model-cc", "small-model-crossfit",
           "small-model-crossfit-both", "small-model-crossfit-demos", "small-model-halving", "small-model-minval",
           "small-model-searched", "small-model-startup4")
CASES = ("task", *PRESETS, "real")

#: keys whose values differ between two identical runs (times and where the run lives)
VOLATILE = {"wall_seconds", "seconds", "started", "finished", "datetime_start", "datetime_complete", "run_dir",
            "elapsed", "created", "updated", "time", "duration", "out"}


def preset_path(name: str) -> Path:
    for d in PRESET_DIRS:
        p = d / f"{name}.yaml"
        if p.exists():
            return p
    raise FileNotFoundError(f"preset {name!r} is in none of {[str(d) for d in PRESET_DIRS]}")


def _scrub(value, run_dir: str):
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE else _scrub(v, run_dir)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, run_dir) for v in value]
    if isinstance(value, str) and run_dir in value:
        return value.replace(run_dir, "<run>")
    return value


def normalized(run: Path, name: str) -> str:
    """The file's text with the volatile values replaced, JSON re-dumped with sorted keys."""
    text = (run / name).read_text()
    if name.endswith(".jsonl"):
        rows = [_scrub(json.loads(line), str(run)) for line in text.splitlines() if line.strip()]
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    return json.dumps(_scrub(json.loads(text), str(run)), sort_keys=True, indent=1) + "\n"


def _scripted_task(case: str):
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import sst2_task

    from optimizer.task import apply_preset

    task = sst2_task(engine_defaults=True, train=40, validation=24, test=40, trials=8, bootstrap_examples=12)
    if case != "task":
        task = apply_preset(task, str(preset_path(case)))
        task.optimizer.trials = 8
    return task


def run_case(case: str, out: Path) -> Path:
    """Run one case into ``out`` (a fresh directory) and return the run directory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from optimizer.engine import RunOptions, optimize

    run = out / "run"
    if case == "real":
        from conftest_runs import small_sst2_task
        from optimizer.task import load_task

        cache = out / "cache"
        shutil.copytree(GOLDEN / "real" / "cache", cache) if (GOLDEN / "real" / "cache").exists() else None
        task = load_task(small_sst2_task(out / "task.yaml", sizes=(24, 16, 24), trials=4, demo_sets=4,
                                         instructions=2, bootstrap_examples=8))
        optimize(task, RunOptions(out=run, seed=0, cache_dir=cache, preflight=False))
        return run
    from fakes import ScriptedBackend

    from optimizer.data import make_splits

    task = _scripted_task(case)
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    optimize(task, RunOptions(out=run, backend=ScriptedBackend(answers), seed=3))
    return run


def outputs(case: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        run = run_case(case, Path(tmp))
        got = {name: normalized(run, name) for name in FILES}
        if case == "real" and not (GOLDEN / "real" / "cache").exists():
            shutil.copytree(Path(tmp) / "cache", GOLDEN / "real" / "cache")
        return got


def main(argv: list[str]) -> int:
    for case in argv or CASES:
        d = GOLDEN / case
        d.mkdir(parents=True, exist_ok=True)
        for name, text in outputs(case).items():
            (d / name).write_text(text)
        print(f"wrote {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
