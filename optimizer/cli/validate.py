"""``optimize validate TASK.yaml [--lm PROFILE]``: check a task file without calling the LM.

Schema, data files, columns, labels, metric and LM profile; then notes on what the search will see
(splits shared between sources, validation examples borrowed from train, the balanced objective,
duplicates removed from later splits).
"""

from __future__ import annotations

import argparse
import collections

from ._common import add_flag

NAME = "validate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    val = sub.add_parser(NAME, help="check a task file (schema, data files, columns, labels, metric, LM profile)")
    val.add_argument("task")
    add_flag(val, "--lm", help="LM profile to check instead of the task's")
    add_flag(val, "--debug")


def _print_notes(task, splits, sizes: dict) -> None:
    searched_splits = splits.with_validation_of(task.optimizer.min_validation)
    searched = searched_splits.sizes()
    if searched != sizes:
        print(f"  optimizer.min_validation: the search scores {searched['validation']} validation examples, "
              f"{searched['validation'] - sizes['validation']} of them from the end of train "
              f"({searched['train']} stay as the demo pool)")
    if task.optimizer.objective == "balanced":
        if task.objective == "balanced":
            counts = collections.Counter(e.output for e in searched_splits.validation)
            print("  optimizer.objective: balanced: each label weighs the same on validation ("
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
        elif "objective" in task.optimizer.model_fields_set:  # asked for (the default says nothing here)
            print("  optimizer.objective: balanced needs a label set (output.labels or metric.labels): "
                  "trials maximise the mean")
    removed = {k: v for k, v in splits.leakage.items() if v}
    if removed:
        print("  removed from later splits as duplicates: " + ", ".join(f"{k} {v}" for k, v in removed.items()))


def handle(args: argparse.Namespace) -> int:
    from ..data import load_raw, make_splits, source_overlap
    from ..engine import resolve_lm
    from ..metrics import build_metric
    from ..task import load_task

    task = load_task(args.task)
    raw = load_raw(task)
    splits = make_splits(task, raw)
    metric = build_metric(task)
    profile = resolve_lm(task, args.lm)
    if metric.needs_lm:  # the judge's profile must exist too
        from ..run.inputs import judge_profile

        judge_profile(task)
    overlap = source_overlap(task, raw)
    sizes = splits.sizes()
    print(f"{args.task}: ok · task {task.task} v{task.version} · train {sizes['train']} · validation "
          f"{sizes['validation']} · test {sizes['test']} · metric {task.metric.name} · lm {profile.name} "
          f"({profile.backend})")
    if overlap:
        print("  inputs shared between source splits: " + ", ".join(f"{k} {v}" for k, v in overlap.items()))
    _print_notes(task, splits, sizes)
    return 0
