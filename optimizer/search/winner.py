"""The winner: the best complete trial (ties broken so that a resume or another storage picks the same
one), the shortest prompt within its interval (``pick: shortest``), and the Pareto front of score and
prompt length."""

from __future__ import annotations

import math
from typing import Any

import optuna

from .sampling import trial_slot


def _rank(t: optuna.trial.FrozenTrial) -> tuple:
    # a weighted objective's ties (prompts that each answer one label everywhere score 1/K balanced) go to
    # the higher plain mean over the same examples; a cross-fitted objective's ties (the same count right
    # over validation and training examples together) go to the higher mean on the validation split
    # itself, the score the run reports, before the shorter prompt
    plain = t.user_attrs.get("metric_mean", t.value)
    return (round(t.value, 9), round(plain, 9), round(t.user_attrs.get("val_mean", plain), 9),
            -t.user_attrs.get("prompt_words", 0), -trial_slot(t), -t.number)


def pick_best(complete: list[optuna.trial.FrozenTrial], pick: str = "best") -> optuna.trial.FrozenTrial:
    top = max(complete, key=_rank)
    if pick != "shortest":
        return top
    from ..stats import bootstrap_ci

    scores = [v for _, v in sorted(top.intermediate_values.items())]
    low = bootstrap_ci(scores, seed=0).low if scores else top.value
    within = [t for t in complete if t.value >= low - 1e-12]
    return min(within, key=lambda t: (t.user_attrs.get("prompt_words", 0), -t.value, trial_slot(t), t.number))


def pareto_front(complete: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    front: list[dict[str, Any]] = []
    best_value = -math.inf
    for t in sorted(complete, key=lambda t: (t.user_attrs.get("prompt_words", 0), -t.value, trial_slot(t))):
        if t.value > best_value:
            best_value = t.value
            front.append({"trial": t.number, "slot": trial_slot(t), "val": round(t.value, 6),
                          "prompt_words": t.user_attrs.get("prompt_words", 0), "params": dict(t.params)})
    return front
