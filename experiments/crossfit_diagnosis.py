"""Why cross-fitting (optimizer.crossfit) on BBH navigate: candidate prompts scored outside the search on
the comparison harness's splits (75 train / 60 validation / 100 test), seed instruction, likelihood readout.
For each: accuracy / label-balanced accuracy on validation, on train cross-fitted (kNN: each training
question answered by its other nearest training questions; a fixed 6-demo set: the training examples not
in it), on both together, and on test. Answering No everywhere is the first row.

    .venv/bin/python experiments/crossfit_diagnosis.py
"""
import collections
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer.data import make_splits  # noqa: E402
from optimizer.engine import make_evaluator, resolve_lm  # noqa: E402
from optimizer.lm import create_backend  # noqa: E402
from optimizer.lm.cache import ResponseCache  # noqa: E402
from optimizer.program import Candidate  # noqa: E402
from optimizer.task import load_task  # noqa: E402


def rates(pairs):
    """(accuracy, label-balanced accuracy) of (gold label, score) pairs."""
    by = collections.defaultdict(list)
    for gold, score in pairs:
        by[gold].append(score)
    return sum(sc for _, sc in pairs) / len(pairs), sum(sum(v) / len(v) for v in by.values()) / len(by)


def main():
    task = load_task(ROOT / "tasks/bbh_navigate/task.yaml")
    task.splits.validation.limit, task.splits.test.limit = 60, 100
    s = make_splits(task)
    profile = resolve_lm(task, None)
    out = ROOT / "experiments/results/crossfit"
    out.mkdir(parents=True, exist_ok=True)
    backend = create_backend(profile, cache=ResponseCache(out / "lm-cache.sqlite"))
    ev = make_evaluator(task, profile, backend)

    def show(name, val, fitted, test):
        cols = [("val", val), ("train cross-fitted", fitted), ("val+train", val + fitted), ("test", test)]
        print(f"{name:8s} " + "  ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in ((k, rates(v)) for k, v in cols)),
              flush=True)

    print("accuracy/balanced accuracy")
    always_no = lambda xs: [(e.output, float(e.output == "No")) for e in xs]  # noqa: E731
    show("No", always_no(s.validation), always_no(s.train), always_no(s.test))
    def scored(c, xs):
        return [(e.output, ev.run_one(c, e).score) for e in xs]

    for k in (2, 4, 8):  # the evaluator leaves a training example out of its own neighbours
        c = Candidate(task.instruction, tuple(s.train), scoring="likelihood", knn=k)
        show(f"knn{k}", scored(c, s.validation), scored(c, s.train), scored(c, s.test))
    for j in range(5):
        demos = tuple(random.Random(j).sample(s.train, 6))
        c = Candidate(task.instruction, demos, scoring="likelihood")
        show(f"fixed{j}", scored(c, s.validation), scored(c, [e for e in s.train if e not in demos]), scored(c, s.test))
    backend.close()


if __name__ == "__main__":
    main()
