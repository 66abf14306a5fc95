"""A/A check on the real embedded model (issue 25): picking the best of N copies of one prompt on validation
must not make the verdict say ``improved`` on test.

Each replicate scores N copies of the same prompt (the SST-2 seed instruction with the same 4 demos) on the
validation split under sampled decoding (``--temperature``, default 1.0), every copy and example with its own
sample index (a seed per call; one seed for every example would draw the same quantile each time): the
copies differ only in the model's own sampling noise. The best copy on validation is the A/A winner; on
test it is compared, paired and Holm-corrected as in every run (``optimizer.run.verdict.verdict``), with
another copy of the prompt (the seed baseline) and with always answering the most frequent training label.

    PYTHONPATH=$PWD .venv/bin/python experiments/aa_real.py [--replicates 5] [--copies 6] [--out FILE]

Prints one JSON row per replicate and the rate of ``improved`` verdicts. Real LM calls (cached under
``--cache-dir``, so a rerun is free and gives the same rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _task():
    from optimizer.task import task_from_dict

    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"], data["splits"]["validation"]["limit"] = 40, 30
    data["splits"]["test"]["limit"] = 100
    return task_from_dict(data, base_dir=ROOT / "tasks/sst2")


def _scores(ev, cand, examples, sample: int) -> list[float]:
    """The prompt's scores under sampled decoding: draw ``sample`` of the prompt, a seed per example."""
    from optimizer.adapters import parse_response

    out = []
    for j, ex in enumerate(examples):  # its own draw per example: one seed for all would draw the same quantile
        req = dataclasses.replace(ev.request(cand, ex.inputs), sample=sample * 10_000 + j)
        values, _ = parse_response(ev.adapter, ev.signature(cand), ev.backend.complete(req).text)
        out.append(float(ev.metric(ex, values)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--cache-dir", default=str(ROOT / "experiments/results/aa_real/cache"))
    ap.add_argument("--out", default=str(ROOT / "experiments/results/aa_real/aa_real.json"))
    args = ap.parse_args(argv)

    from optimizer.data import make_splits
    from optimizer.evaluate import Evaluator
    from optimizer.lm import create_backend, load_profile
    from optimizer.lm.cache import ResponseCache
    from optimizer.metrics import build_metric
    from optimizer.program import Candidate
    from optimizer.run.verdict import baseline_names, verdict

    task = _task()
    splits = make_splits(task)
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    backend = create_backend(load_profile("local"), cache=ResponseCache(Path(args.cache_dir) / "lm-cache.sqlite"))
    ev = Evaluator(task, backend, build_metric(task), max_tokens=task.max_tokens, temperature=args.temperature)
    by_label = {lab: [e for e in splits.train if e.output == lab] for lab in task.label_set or []}
    demos = tuple(d for pair in zip(*by_label.values()) for d in pair)[:4]  # 2 per label, alternating
    prompt = Candidate(task.instruction, demos)
    prior = Counter(e.output for e in splits.train).most_common(1)[0][0]
    prior_test = [float(ev.metric(e, {task.output.name: prior})) for e in splits.test]
    rows = []
    try:
        for r in range(args.replicates):
            base = 1000 * (r + 1)
            val = [_scores(ev, prompt, splits.validation, base + i) for i in range(args.copies)]
            means = [sum(v) / len(v) for v in val]
            win = max(range(args.copies), key=lambda i: (means[i], -i))
            best_test = _scores(ev, prompt, splits.test, base + win)
            seed_test = _scores(ev, prompt, splits.test, base + 999)
            v = verdict(best_test, {"seed": seed_test, "label_prior": prior_test},
                        baseline_names(prior, len(demos)), seed=r)
            rows.append({"replicate": r, "val_means": [round(m, 4) for m in means], "winner_copy": win,
                         "winner_val": round(means[win], 4), "winner_test": round(sum(best_test) / len(best_test), 4),
                         "seed_test": round(sum(seed_test) / len(seed_test), 4), "status": v["status"],
                         "p_seed_holm": v["tests"]["seed"]["p_holm"], "diff_vs_seed": v["tests"]["seed"]["diff"]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        backend.close()
    n = len(rows)
    rates = {"replicates": n, "copies": args.copies, "temperature": args.temperature,
             "improved": sum(x["status"] == "improved" for x in rows) / n,
             "beats_seed_holm": sum(x["p_seed_holm"] < 0.05 and x["diff_vs_seed"] > 0 for x in rows) / n,
             "mean_optimism": round(sum(x["winner_val"] - x["winner_test"] for x in rows) / n, 4)}
    print(json.dumps(rates))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rates": rates, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
