"""Distributed trials benchmark: trials per minute with 1 and with 4 `optimize` processes sharing one
PostgreSQL study, against a loopback OpenAI-compatible server that adds 200 ms of latency per call,
side by side in one run.

    .venv/bin/python experiments/bench_workers.py [--storage postgresql://postgres@127.0.0.1:5432/test]
        [--trials 16] [--validation 24] [--concurrency 4] [--latency 0.2]

Each configuration gets a fresh study and no response cache (every call is paid). Trials per minute is
measured over the search phase, from the first trial's start to the last trial's end as recorded in the
study, so process start-up, the candidate phase and the held-out test are not counted; the wall time of
the whole command is printed as well. Checks that every slot ran exactly once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from bench_concurrency import start_server  # noqa: E402


def write_inputs(d: Path, url: str, validation: int) -> tuple[Path, Path]:
    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"] = 40
    data["splits"]["validation"]["limit"] = validation
    data["splits"]["test"]["limit"] = 24
    for k, v in {"max_demos": 4, "demo_sets": 4, "instructions": 4, "bootstrap_examples": 8,
                 "proposers": ["offline"], "prune": False}.items():
        data["optimizer"][k] = v
    for split, f in data["dataset"]["files"].items():
        data["dataset"]["files"][split] = str(ROOT / "tasks/sst2" / f)
    (d / "task.yaml").write_text(yaml.safe_dump(data))
    (d / "lm.yaml").write_text(yaml.safe_dump({"backend": "openai", "base_url": url, "model": "canned",
                                               "api": "completions", "max_retries": 3, "timeout": 30}))
    return d / "task.yaml", d / "lm.yaml"


def run(n_workers: int, storage: str, task: Path, lm: Path, trials: int, concurrency: int, d: Path) -> dict:
    import optuna

    from optimizer.search import ATTR, open_storage

    study = f"bench-workers-{n_workers}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "optimizer.cli", str(task), "--lm", str(lm), "--storage",
                               storage, "--study", study, "--trials", str(trials), "--out", str(d / f"{study}-w{i}"),
                               "--no-cache", "--concurrency", str(concurrency), "--quiet"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(n_workers)]
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"worker failed: {err[-2000:]}")
    wall = time.perf_counter() - t0
    st = open_storage(storage)
    s = optuna.load_study(study_name=study, storage=st)
    ts = s.get_trials()
    starts = [t.datetime_start for t in ts]
    ends = [t.datetime_complete for t in ts]
    span = (max(ends) - min(starts)).total_seconds()
    slots = sorted(t.user_attrs[ATTR + "slot"] for t in ts)
    workers = {t.system_attrs.get(ATTR + "worker") for t in ts}
    ok = slots == list(range(trials)) and all(t.state.name in ("COMPLETE", "PRUNED") for t in ts)
    optuna.delete_study(study_name=study, storage=st)
    return {"workers": n_workers, "trials": len(ts), "span_s": span, "per_min": 60 * len(ts) / span,
            "wall_s": wall, "exactly_once": ok, "workers_seen": len(workers)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--storage", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--validation", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            task, lm = write_inputs(d, url, args.validation)
            one = run(1, args.storage, task, lm, args.trials, args.concurrency, d)
            four = run(4, args.storage, task, lm, args.trials, args.concurrency, d)
    finally:
        proc.terminate()
        proc.wait()
    print(f"latency {args.latency * 1000:.0f} ms per call, {args.validation} validation examples per trial, "
          f"concurrency {args.concurrency} per worker, {args.trials} trials, no pruning, no cache")
    for r in (one, four):
        print(f"{r['workers']} worker(s): {r['per_min']:6.1f} trials/min (search phase {r['span_s']:.1f} s, "
              f"whole command {r['wall_s']:.1f} s), {r['trials']} trials, each slot exactly once: "
              f"{r['exactly_once']}, workers that ran trials: {r['workers_seen']}")
    print(f"speed-up: {four['per_min'] / one['per_min']:.1f}x")
    return 0 if one["exactly_once"] and four["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
