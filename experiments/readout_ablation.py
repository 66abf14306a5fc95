"""How much of a winner's gain over the seed prompt is its wording, and how much its readout?

The seed prompt the verdict sets against a winner is the seed instruction with a generated answer. A
winner that reads labels from log-probabilities (``scoring`` likelihood, calibrated or batch) changed two
things at once. For each finished run directory this scores a third candidate on the same test examples:
the seed instruction with the winner's demos and readout (batch offsets estimated on the run's validation
split, the way a trial estimates them on the examples it scored), and prints, with paired p-values:

    seed prompt  ->  seed instruction + winner's readout (and demos)  ->  winner

    .venv/bin/python experiments/readout_ablation.py RUN_DIR [RUN_DIR ...] [--out FILE.json]

The LM calls go through the run's LM profile and the response cache given by ``--cache-dir`` (the run's
own cache answers the winner's and the seed prompt's test calls again, so only the new candidate costs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer.data import make_splits  # noqa: E402
from optimizer.engine import make_evaluator  # noqa: E402
from optimizer.lm import ResponseCache, create_backend  # noqa: E402
from optimizer.program import Candidate  # noqa: E402
from optimizer.runread import FinishedRun  # noqa: E402
from optimizer.stats import paired_test  # noqa: E402


def ablate(run_dir: Path, cache_dir: Path | None) -> dict:
    run = FinishedRun.open(run_dir)
    task = run.task
    backend = create_backend(run.profile, cache=ResponseCache(cache_dir / "lm-cache.sqlite") if cache_dir else False)
    try:
        ev = make_evaluator(task, run.profile, backend)
        splits = make_splits(task)
        best = run.candidate("best")
        seed = Candidate(task.instruction)
        mixed = dataclasses.replace(best, instruction=task.instruction, offsets=())
        if mixed.scoring == "batch":
            mixed = ev.with_batch_offsets(mixed, splits.validation)
        scores = {name: ev.evaluate(c, splits.test).scores for name, c in
                  (("seed", seed), ("seed_instruction_winner_readout", mixed), ("winner", best))}
    finally:
        backend.close()
    mean = {k: round(sum(v) / len(v), 4) for k, v in scores.items()}
    tests = {f"{a}->{b}": {k: (round(v, 6) if isinstance(v, float) else v)
                           for k, v in paired_test(scores[a], scores[b]).items()}
             for a, b in (("seed", "seed_instruction_winner_readout"), ("seed_instruction_winner_readout", "winner"),
                          ("seed", "winner"))}
    return {"run": str(run_dir), "task": task.task, "test_n": len(splits.test), "scoring": best.scoring,
            "n_demos": len(best.demos), "knn": best.knn, "winner_instruction": best.instruction,
            "winner_origin": (run.summary.get("best") or {}).get("instruction_origin"), "mean": mean, "tests": tests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--cache-dir", type=Path, help="the LM response cache the runs used (its lm-cache.sqlite)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = [ablate(r, args.cache_dir) for r in args.runs]
    print("| task | readout | seed prompt | seed instruction + winner's readout | winner | readout step p | "
          "wording step p |")
    print("|---|---|---|---|---|---|---|")
    def p(v: float) -> str:
        return "< 1e-12" if v < 1e-12 else f"{v:.3g}"

    for r in rows:
        m, t = r["mean"], r["tests"]
        print(f"| {r['task']} | {r['scoring']} | {m['seed']:.3f} | {m['seed_instruction_winner_readout']:.3f} | "
              f"{m['winner']:.3f} | {p(t['seed->seed_instruction_winner_readout']['p_value'])} | "
              f"{p(t['seed_instruction_winner_readout->winner']['p_value'])} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
