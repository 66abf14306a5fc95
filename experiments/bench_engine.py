"""Engine efficiency: scoring one candidate on N examples through our engine, against the limit (a bare
llama-cpp-python loop over the very same rendered prompts) and against DSPy's ``Evaluate`` on the same
program, all on the embedded model, in one process, one after the other, repeated and interleaved.

Then the peak resident memory of a whole ``optimize`` run on SST-2 (a child process; its
``ru_maxrss``), optionally next to a DSPy MIPROv2 light run on the same model (``--mipro``).

    .venv/bin/python experiments/bench_engine.py                 # 200 examples, 3 rounds
    .venv/bin/python experiments/bench_engine.py --n 100 --rounds 2 --no-run

Nothing is cached: our backend runs with the response cache off, DSPy's own cache is off. Every path
uses one llama.cpp model with the same context size, threads and decoding parameters (greedy, the
adapter's stop sequences, ``repeat_penalty`` 1.0); each path gets its own warm-up call first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer.data import make_splits  # noqa: E402
from optimizer.engine import make_evaluator, resolve_lm  # noqa: E402
from optimizer.lm import create_backend  # noqa: E402
from optimizer.program import Candidate  # noqa: E402
from optimizer.task import load_task  # noqa: E402


def bare_loop(llm, requests) -> float:
    t0 = time.perf_counter()
    for r in requests:
        llm.create_completion(r.prompt, max_tokens=r.max_tokens, temperature=0.0, stop=list(r.stop) or None,
                              top_k=0, top_p=1.0, repeat_penalty=1.0, seed=0)
    return time.perf_counter() - t0


def ours(evaluator, cand, examples) -> tuple[float, float]:
    evaluator._memo.clear()
    t0 = time.perf_counter()
    res = evaluator.evaluate(cand, examples)
    return time.perf_counter() - t0, res.mean


def dspy_evaluate(task, cand, examples, backend, max_tokens) -> tuple[float, float]:
    import logging

    import dspy

    from optimizer.adapters import CompletionAdapter
    from optimizer.lm.dspy_engine import dspy_lm
    from optimizer.program import build_program

    logging.getLogger("dspy").setLevel(logging.ERROR)  # one "truncated" warning per call otherwise

    program = build_program(task, cand)
    out = task.output.name
    dev = [dspy.Example(**e.to_dict(out)).with_inputs(*task.input_names) for e in examples]
    metric_fn = make_evaluator(task, backend.profile, backend).metric

    def metric(gold, pred, trace=None):
        from optimizer.data import Example
        return float(metric_fn(Example("x", {n: gold[n] for n in task.input_names}, gold[out]), dict(pred)))

    lm = dspy_lm(backend, max_tokens=max_tokens)
    ev = dspy.Evaluate(devset=dev, metric=metric, num_threads=1, display_progress=False)
    with dspy.context(lm=lm, adapter=CompletionAdapter()):
        t0 = time.perf_counter()
        res = ev(program)
        dt = time.perf_counter() - t0
    score = getattr(res, "score", res)
    return dt, float(score) / 100.0 if float(score) > 1 else float(score)


def peak_rss_of(cmd: list[str], cwd: Path) -> tuple[float, int, float]:
    """(peak RSS in GB, exit status, seconds) of a child process."""
    code = (f"import resource, subprocess, sys, time, json; t=time.perf_counter(); "
            f"r=subprocess.run({cmd!r}, cwd={str(cwd)!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            f"print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, "
            f"time.perf_counter()-t]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kb, rc, secs = json.loads(out.stdout.strip().splitlines()[-1])
    return kb / 1024 / 1024, rc, secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--demos", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-run", action="store_true", help="skip the peak-memory run of optimize")
    ap.add_argument("--mipro", action="store_true", help="also measure a DSPy MIPROv2 light run's peak memory")
    ap.add_argument("--run-args", default="", help="extra arguments for the measured optimize run, e.g. "
                                                   "\"--preset small-model --search-calls 684\"")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()

    task = load_task(ROOT / "tasks" / args.task / "task.yaml")
    splits = make_splits(task)
    examples = (splits.validation + splits.test)[: args.n]
    profile = resolve_lm(task, None)
    backend = create_backend(profile, cache=False)
    evaluator = make_evaluator(task, profile, backend)
    cand = Candidate(task.instruction, tuple(splits.train[: args.demos]))
    requests = [evaluator.request(cand, e.inputs) for e in examples]

    from llama_cpp import Llama

    from optimizer.lm._local import _silence_llama_logs

    _silence_llama_logs()
    threads = profile.n_threads or max(1, min(os.cpu_count() or 1, 8))
    bare = Llama(model_path=str(backend.model_path), n_ctx=profile.n_ctx, n_threads=threads,
                 n_threads_batch=threads, n_batch=profile.n_batch, seed=0, verbose=False, logits_all=False)
    dspy_backend = create_backend(profile, cache=False)
    # warm-ups: load each model, fill the prompt-prefix cache once
    bare_loop(bare, requests[:2])
    ours(evaluator, cand, examples[:2])
    dspy_evaluate(task, cand, examples[:2], dspy_backend, evaluator.max_tokens)

    times: dict[str, list[float]] = {"bare": [], "ours": [], "dspy": []}
    scores: dict[str, float] = {}
    for r in range(args.rounds):
        times["bare"].append(bare_loop(bare, requests))
        t, scores["ours"] = ours(evaluator, cand, examples)
        times["ours"].append(t)
        t, scores["dspy"] = dspy_evaluate(task, cand, examples, dspy_backend, evaluator.max_tokens)
        times["dspy"].append(t)
        print(f"round {r + 1}: bare {times['bare'][-1]:.2f}s  ours {times['ours'][-1]:.2f}s  "
              f"dspy {times['dspy'][-1]:.2f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{args.task}: one candidate ({args.demos} demos) on {len(examples)} examples, median of {args.rounds}")
    print("| path | seconds | per call ms | ratio to bare loop | score |")
    print("|---|---|---|---|---|")
    print(f"| bare llama-cpp-python loop | {med['bare']:.2f} | {1000 * med['bare'] / len(examples):.1f} | 1.00 | - |")
    print(f"| ours (Evaluator) | {med['ours']:.2f} | {1000 * med['ours'] / len(examples):.1f} | "
          f"{med['ours'] / med['bare']:.3f} | {scores['ours']:.3f} |")
    print(f"| DSPy Evaluate | {med['dspy']:.2f} | {1000 * med['dspy'] / len(examples):.1f} | "
          f"{med['dspy'] / med['bare']:.3f} | {scores['dspy']:.3f} |")
    doc = {"task": args.task, "examples": len(examples), "demos": args.demos, "rounds": times,
           "median_seconds": med, "ratio_ours": med["ours"] / med["bare"], "ratio_dspy": med["dspy"] / med["bare"],
           "scores": scores}
    del bare
    backend.close()
    dspy_backend.close()

    if not args.no_run:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            cmd = [str(Path(sys.executable)), "-m", "optimizer.cli", str(ROOT / "tasks" / args.task / "task.yaml"),
                   "--out", str(Path(tmp) / "run"), "--cache-dir", str(Path(tmp) / "cache"), *args.run_args.split()]
            gb, rc, secs = peak_rss_of(cmd, ROOT)
            print(f"\npeak RSS of a whole `optimize` run on {args.task} ({args.run_args or 'defaults'}, empty cache): "
                  f"{gb:.3f} GB "
                  f"(exit {rc}, {secs:.0f} s)")
            doc["optimize_peak_rss_gb"] = gb
            doc["optimize_exit"] = rc
            doc["optimize_seconds"] = secs
            if args.mipro:
                cmd = [str(Path(sys.executable)), str(ROOT / "experiments" / "run.py"), "--suite", "classification",
                       "--only", f"{args.task}:0", "--method", "mipro_light", "--out", str(Path(tmp) / "mipro"),
                       "--no-tables"]
                gb2, rc2, secs2 = peak_rss_of(cmd, ROOT)
                print(f"peak RSS of a DSPy MIPROv2 light run (experiments/run.py): {gb2:.3f} GB "
                      f"(exit {rc2}, {secs2:.0f} s)")
                doc["mipro_peak_rss_gb"] = gb2
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
