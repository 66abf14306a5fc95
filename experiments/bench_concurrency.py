"""Concurrency benchmark: calls per second of the Evaluator at concurrency 1 and 16 against a loopback
OpenAI-compatible server that adds 200 ms of latency per call, then the same search with 20% of the
calls answered by HTTP 429 (Retry-After), side by side in one run.

    .venv/bin/python experiments/bench_concurrency.py [--latency 0.2] [--calls 24] [--high 16]

The server (tests/faultproxy.py, canned mode) runs in its own process and answers in parallel, so
what is measured is the client: thread pool, adaptive limiter, openai client, rendering, parsing.
Prints calls/s for each concurrency and the ratio; the 429 part prints trial scores with and without
faults (they must be identical) and how many 429s were retried.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def start_server(latency: float, rates: dict[str, float] | None = None, retry_after: str = "0"):
    args = [sys.executable, str(ROOT / "tests" / "faultproxy.py"), "--latency", str(latency),
            "--retry-after", retry_after]
    for k, v in (rates or {}).items():
        args += ["--rate", f"{k}={v}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("URL "), line
    return proc, line.split()[1]


def task_and_splits(validation: int):
    import yaml

    from optimizer.data import make_splits
    from optimizer.task import task_from_dict

    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"] = 40
    data["splits"]["validation"]["limit"] = validation
    data["splits"]["test"]["limit"] = 40
    task = task_from_dict(data, base_dir=ROOT / "tasks/sst2")
    return task, make_splits(task)


def backend(url: str, concurrency: int):
    from optimizer.lm import create_backend
    from optimizer.lm.profiles import LMProfile

    prof = LMProfile(name="latency", backend="openai", base_url=url, model="canned", max_retries=3, timeout=30)
    b = create_backend(prof, cache=False)
    b.set_concurrency(concurrency)
    return b


def calls_per_second(url: str, concurrency: int, n_calls: int, task, examples, tag: str) -> tuple[float, int]:
    """One candidate evaluated on ``n_calls`` distinct examples (a trial's per-example loop)."""
    from optimizer.engine import make_evaluator
    from optimizer.program import Candidate

    b = backend(url, concurrency)
    ev = make_evaluator(task, b.profile, b)
    warm = Candidate(f"{task.instruction} (warm-up {tag})", (), {})
    ev.evaluate(warm, examples[:concurrency])  # open the connections, build the signature
    cand = Candidate(f"{task.instruction} ({tag})", (), {})
    t0 = time.perf_counter()
    done = len(ev.evaluate(cand, examples[:n_calls]).outcomes)
    dt = time.perf_counter() - t0
    ev.close()
    b.close()
    return done / dt, done


def search_scores(url: str, task, concurrency: int, trials: int, seed: int = 0):
    from optimizer.engine import RunOptions, optimize

    b = backend(url, concurrency)
    b.retry.base = 0.05
    with tempfile.TemporaryDirectory() as d:
        res = optimize(task, RunOptions(out=Path(d) / "run", backend=b, seed=seed, trials=trials))
        recs = [(r["slot"], r["state"], r["score"], r["examples"], r["failed_calls"])
                for r in __import__("json").loads("[" + ",".join(
                    (Path(d) / "run" / "trials.jsonl").read_text().splitlines()) + "]")]
    u = b.usage
    b.close()
    return res.summary, recs, u


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--validation", type=int, default=24)
    ap.add_argument("--low-calls", type=int, default=24)
    ap.add_argument("--high-calls", type=int, default=192)
    ap.add_argument("--high", type=int, default=16)
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    task, splits = task_and_splits(max(args.high_calls, args.low_calls))

    proc, url = start_server(args.latency)
    try:
        low, n_low = calls_per_second(url, 1, args.low_calls, task, splits.validation, "c1")
        high, n_high = calls_per_second(url, args.high, args.high_calls, task, splits.validation, "c16")
    finally:
        proc.terminate()
        proc.wait()
    print(f"latency {args.latency * 1000:.0f} ms per call")
    print(f"concurrency 1:  {low:6.2f} calls/s ({n_low} calls)")
    print(f"concurrency {args.high}: {high:6.2f} calls/s ({n_high} calls)")
    print(f"ratio: {high / low:.1f}x")

    # the same search without and with 20% 429s: scores must not change, no trial may be lost
    task2, _ = task_and_splits(args.validation)
    task2.optimizer.bootstrap_examples = 12
    proc, url = start_server(args.latency / 4)
    try:
        clean, clean_recs, _ = search_scores(url, task2, args.high, args.trials)
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start_server(args.latency / 4, {"429": 0.2}, retry_after="0.1")
    try:
        faulty, faulty_recs, u = search_scores(url, task2, args.high, args.trials)
    finally:
        proc.terminate()
        proc.wait()
    same = clean_recs == faulty_recs and all(clean[s][k] == faulty[s][k] for s in ("baseline", "best")
                                             for k in ("val", "test", "instruction", "demo_ids"))
    print(f"20% injected 429s (Retry-After 0.1 s): {u.retries} retries, {u.failures} calls failed, "
          f"trials {faulty['trials']} vs clean {clean['trials']}, failed calls in trials "
          f"{sum(r[4] for r in faulty_recs)}; trial scores identical to the clean run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
