"""How noisy is an LM judge? The same (answer, reference) pairs judged greedily and again under sampling.

Pairs come from a task's test split: each example's gold answer (should be judged right) and the gold answer
of another example with a different answer (should be judged wrong), so the truth of every pair is known
without a task LM. Each pair is judged once greedily (what a run uses) and ``--samples`` times at
``--temperature`` (draws ``sample=1..K``, cached apart). Reported: the judge's accuracy against the truth
(greedy), the agreement of sampled judgments with the greedy one, and the share of pairs whose sampled
judgments are unanimous. Rows go to ``experiments/results/judge_noise/rows.jsonl`` with provenance and the
table to ``judge_noise.md``.

    .venv/bin/python experiments/judge_noise.py tasks/gsm8k/task.yaml --judge local-instruct \\
        --rubric "The answer gives the same final number as the reference answer." --pairs 20 --samples 3
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rows import ROOT, append_row, git_commit, load_rows, provenance  # noqa: E402

OUT = ROOT / "experiments" / "results" / "judge_noise"


def pairs_of(examples: list, n: int, seed: int) -> list[tuple]:
    """(example, answer, truth): the gold answer (1) and another example's different gold answer (0)."""
    rng = random.Random(seed)
    chosen = examples[: max(1, n // 2)]
    out = []
    for ex in chosen:
        out.append((ex, str(ex.output), 1.0))
        others = [e for e in examples if str(e.output).strip() != str(ex.output).strip()]
        out.append((ex, str(rng.choice(others).output), 0.0))
    return out[:n]


def measure(task_path: str, judge: str, rubric: str, n: int, samples: int, temperature: float, seed: int) -> dict:
    from optimizer.data import make_splits
    from optimizer.lm import ResponseCache, create_backend, default_cache_dir
    from optimizer.metrics import build_metric
    from optimizer.run.inputs import judge_profile
    from optimizer.task import load_task

    task = load_task(task_path)
    task = task.model_copy(update={"metric": task.metric.model_copy(update={"name": "judge", "lm": judge,
                                                                            "rubric": rubric})})
    metric = build_metric(task)
    cache = ResponseCache(default_cache_dir() / "lm-cache.sqlite")
    backend = create_backend(judge_profile(task), cache=cache)
    metric.attach(backend)
    t0 = time.perf_counter()
    rows = []
    try:
        for ex, answer, truth in pairs_of(make_splits(task).test, n, seed):
            greedy = metric.verdict(backend.complete(metric.request(ex, answer)).text)
            drawn = [metric.verdict(backend.complete(metric.request(ex, answer, temperature=temperature,
                                                                    sample=k)).text) for k in range(1, samples + 1)]
            rows.append((truth, greedy, drawn))
    finally:
        backend.close()
        cache.close()
    n_pairs = len(rows)
    return {"task": task.task, "judge": judge, "rubric": rubric, "pairs": n_pairs, "samples": samples,
            "temperature": temperature, "seed": seed,
            "accuracy": round(sum(t == g for t, g, _ in rows) / n_pairs, 4),
            "accuracy_on_right": round(sum(g for t, g, _ in rows if t == 1.0) / max(1, sum(t for t, _, _ in rows)), 4),
            "accuracy_on_wrong": round(sum(1 - g for t, g, _ in rows if t == 0.0)
                                       / max(1, sum(1 - t for t, _, _ in rows)), 4),
            "agreement_with_greedy": round(sum(d == g for _, g, ds in rows for d in ds) / max(1, n_pairs * samples), 4),
            "unanimous": round(sum(len(set(ds)) == 1 for _, _, ds in rows) / n_pairs, 4),
            "lm_calls": backend.usage.calls, "cache_hits": backend.usage.cache_hits,
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict]) -> str:
    lines = ["# Judge noise", "",
             "The same (answer, reference) pairs judged greedily and again under sampling "
             "(`experiments/judge_noise.py`; the truth of a pair is known: a gold answer, or another example's "
             "different gold answer). Made from `rows.jsonl`; do not edit by hand.", "",
             "| task | judge | pairs | accuracy (greedy) | on right answers | on wrong answers | samples at T | "
             "agreement with greedy | unanimous | commit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['judge']} | {r['pairs']} | {r['accuracy']:.3f} | {r['accuracy_on_right']:.3f} "
                     f"| {r['accuracy_on_wrong']:.3f} | {r['samples']} at {r['temperature']} | "
                     f"{r['agreement_with_greedy']:.3f} | {r['unanimous']:.3f} | "
                     f"{str(r['provenance']['commit'])[:7]} |")
    lines += ["", "Rubrics: " + "; ".join(sorted({f"{r['task']}: \"{r['rubric']}\"" for r in rows})), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("--judge", default="local-instruct")
    ap.add_argument("--rubric", required=True)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = measure(args.task, args.judge, args.rubric, args.pairs, args.samples, args.temperature, args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    append_row(OUT / "rows.jsonl", result, provenance("judge_noise", result["task"], f"judge@{args.judge}",
                                                      git_commit()))
    (OUT / "judge_noise.md").write_text(table(load_rows(OUT / "rows.jsonl")))
    print(table([r for r in load_rows(OUT / "rows.jsonl")][-1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
