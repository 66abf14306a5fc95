"""A/A check of the verdict (issue 25): a search in which every candidate is, in truth, the same prompt must
declare ``improved`` over the seed prompt in at most 5% of runs.

Every candidate is scored by a scripted backend with a per-example noise model: an input is answered right
with a probability that depends on the input alone (its difficulty, 0.35 to 0.95), drawn independently for
every (prompt, input, run): the prompts the search proposes differ in their text and demos, never in their
true accuracy. So any winner is an A/A winner: the best of N equal prompts, picked on validation noise.
Each run uses the SST-2 example task (train 40, validation 40, test 100, 8 trials) with its own replicate
seed; the verdict compares the winner with the seed prompt, the label prior and the random k-shot prompt on
test (paired, Holm-corrected).

    PYTHONPATH=$PWD .venv/bin/python experiments/aa_check.py [--runs 40] [--out experiments/results/aa_check.json]

Prints the rate of ``improved`` verdicts, the rate at which the winner "beats the seed" on its own
(uncorrected and Holm-corrected), and the mean validation optimism (winner's val - test). No real LM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _uniform(*parts: object) -> float:
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


def make_backend(answers: dict[str, str], replicate: int):
    from optimizer.lm.base import LMBackend, LMRequest, LMResponse
    from optimizer.lm.profiles import LMProfile

    class NoisyEqualBackend(LMBackend):
        """Every prompt has the same accuracy on each input; only the per-(prompt, input) draw differs."""

        name = "scripted"

        def __init__(self) -> None:
            super().__init__(LMProfile(name="scripted", backend="local", model="scripted"), None)

        @property
        def model_id(self) -> str:
            return "scripted-aa"

        def _generate(self, request: LMRequest) -> LMResponse:
            prompt = request.prompt if request.prompt is not None else request.messages[-1][1]
            last = prompt.rsplit("Review:", 1)[-1].split("\n")[0].strip()
            gold = answers.get(last, "positive")
            p_right = 0.35 + 0.6 * _uniform("difficulty", last)
            right = _uniform(replicate, prompt) < p_right
            text = gold if right else ("negative" if gold == "positive" else "positive")
            return LMResponse(text=f" {text}\n", prompt_tokens=len(re.findall(r"\S+", prompt)), completion_tokens=1)

    return NoisyEqualBackend()


def sst2_task():
    from optimizer.task import task_from_dict

    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"], data["splits"]["validation"]["limit"] = 40, 40
    data["splits"]["test"]["limit"] = 100
    data["optimizer"].update(trials=8, bootstrap_examples=12)
    return task_from_dict(data, base_dir=ROOT / "tasks/sst2")


def one_run(replicate: int, tmp: Path) -> dict:
    from optimizer.data import make_splits
    from optimizer.engine import RunOptions, optimize

    task = sst2_task()
    s = make_splits(task)
    answers = {e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test}
    res = optimize(task, RunOptions(out=tmp / f"run{replicate}", backend=make_backend(answers, replicate),
                                    seed=replicate))
    summ = res.summary
    seed_test = summ["verdict"]["tests"]["seed"]
    return {"replicate": replicate, "status": summ["verdict"]["status"], "against": summ["verdict"]["against"],
            "best_val": summ["best"]["val"], "best_test": summ["best"]["test"], "seed_test": summ["baseline"]["test"],
            "seed_p": seed_test["p"], "seed_p_holm": seed_test["p_holm"], "diff_vs_seed": seed_test["diff"],
            "promotion": summ["promotion"]["rule"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", default=None, help="write the per-run rows and the rates as JSON here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs):
            rows.append(one_run(r, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    n = len(rows)
    rates = {"runs": n,
             "improved": sum(r["status"] == "improved" for r in rows) / n,
             "beats_seed_raw": sum(r["seed_p"] < 0.05 and r["diff_vs_seed"] > 0 for r in rows) / n,
             "beats_seed_holm": sum(r["seed_p_holm"] < 0.05 and r["diff_vs_seed"] > 0 for r in rows) / n,
             "mean_optimism": sum(r["best_val"] - r["best_test"] for r in rows) / n}
    print(json.dumps(rates))
    if args.out:
        Path(args.out).write_text(json.dumps({"rates": rates, "rows": rows}, indent=1) + "\n")
    ok = rates["improved"] <= 0.05
    print(f"A/A: improved over the seed in {rates['improved']:.1%} of {n} runs "
          f"({'ok' if ok else 'TOO MANY'}: at most 5%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
