"""Bench statistics: per candidate mean and 95% bootstrap interval, the paired difference to the
reference (the first candidate) with a p-value, tokens, latency and cost per call, and the rank."""

from __future__ import annotations

from typing import Any

from ..data import Example
from ..lm.profiles import LMProfile
from ..metrics import majority_label
from ..stats import bootstrap_ci, mcnemar, paired_bootstrap, paired_test
from ._candidates import BenchCandidate


def _is_binary(xs: list[float]) -> bool:
    return all(x in (0.0, 1.0) for x in xs)


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(config: dict[str, Any], candidates: list[BenchCandidate], examples: list[Example], repeats: int,
              done: dict[tuple[str, str, int], dict[str, Any]], timing: dict[str, list[float]], profile: LMProfile,
              *, seed: int = 0) -> dict[str, Any]:
    """The bench document: the configuration, then one row per candidate, in the order given."""
    prices = profile.prices
    rows: list[dict[str, Any]] = []
    per_example: list[list[float]] = []
    for bc, described in zip(candidates, config["candidates"]):
        row, scores = _candidate_row(bc, described, config["output_field"], examples, repeats, done, timing, prices,
                                     seed)
        rows.append(row)
        per_example.append(scores)
    binary = repeats == 1 and all(_is_binary(s) for s in per_example)
    _compare_to_reference(rows, per_example, binary, seed)
    _rank(rows)
    return {"config": config, "task": config["task"], "split": config["split"], "examples": len(examples),
            "repeats": repeats, "metric": config["metric"], "reference": rows[0]["name"],
            "p_value_test": "mcnemar_exact" if binary else "paired_bootstrap",
            "lm": {k: config["lm"].get(k) for k in ("name", "backend", "model", "base_url", "temperature")
                   if config["lm"].get(k) is not None},
            "prices": prices.model_dump() if prices is not None else None, "candidates": rows}


def _candidate_row(bc: BenchCandidate, described: dict[str, Any], out_name: str, examples: list[Example],
                   repeats: int, done: dict[tuple[str, str, int], dict[str, Any]], timing: dict[str, list[float]],
                   prices: Any, seed: int) -> tuple[dict[str, Any], list[float]]:
    """(the candidate's row, its per-example scores: the mean of the repeats)."""
    key = bc.candidate.key
    recs = [done[(key, ex.id, r)] for ex in examples for r in range(repeats)]
    scores = [sum(done[(key, ex.id, r)]["score"] for r in range(repeats)) / repeats for ex in examples]
    ci = bootstrap_ci(scores, seed=seed)
    pt = _mean([rec["prompt_tokens"] for rec in recs])
    ct = _mean([rec["completion_tokens"] for rec in recs])
    lat = timing.get(key, [])
    cost = None
    if prices is not None and pt is not None:
        cost = pt * prices.prompt_per_1k + (ct or 0.0) * prices.completion_per_1k
    row = {
        **described,
        "mean": round(ci.mean, 6), "ci": [round(ci.low, 6), round(ci.high, 6)], "n": ci.n,
        "parse_failures": sum(1 for rec in recs if not rec.get("parsed", True)),
        "prompt_tokens_per_call": None if pt is None else round(pt, 2),
        "completion_tokens_per_call": None if ct is None else round(ct, 2),
        "latency_s_per_call": None if not lat else round(sum(lat) / len(lat), 4),
        "latency_calls": len(lat),
        "cost_per_1000_calls": None if cost is None else round(cost, 6),
        "per_example": {ex.id: round(s, 6) for ex, s in zip(examples, scores)},
        "answers": {ex.id: [done[(key, ex.id, r)]["prediction"].get(out_name, "")
                            for r in range(repeats)] for ex in examples},
    }
    return row, scores


def _compare_to_reference(rows: list[dict[str, Any]], per_example: list[list[float]], binary: bool,
                          seed: int) -> None:
    """Each row's ``vs_reference``: the paired difference to the first candidate, its interval and p-value
    (exact McNemar for 0/1 scores with one repeat, paired bootstrap otherwise)."""
    ref = per_example[0]
    for row, scores in zip(rows, per_example):
        if row is rows[0]:
            row["vs_reference"] = None
            continue
        diff = paired_bootstrap(ref, scores, seed=seed)
        vs = {"diff": round(diff["diff"], 6), "low": round(diff["low"], 6), "high": round(diff["high"], 6)}
        if binary:
            mc = mcnemar(ref, scores)
            vs.update({"p_value": mc["p_value"], "test": "mcnemar_exact", "reference_only": mc["a_only"],
                       "candidate_only": mc["b_only"]})
        else:
            vs.update({"p_value": diff["p_value"], "test": "paired_bootstrap"})
        row["vs_reference"] = vs


def _rank(rows: list[dict[str, Any]]) -> None:
    """Each row's ``rank`` by mean (ties share a rank)."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["mean"])
    rank = 0
    last = None
    for pos, i in enumerate(order):
        if last is None or rows[i]["mean"] != last:
            rank = pos + 1
            last = rows[i]["mean"]
        rows[i]["rank"] = rank


def label_prior_row(task: Any, evaluator: Any, train: list[Example], examples: list[Example], doc: dict[str, Any],
                    seed: int = 0) -> dict[str, Any] | None:
    """The label prior beside the candidates (tasks with labels): always answering the most frequent training
    label, no LM call; its mean, interval and paired difference to the reference. None without labels."""
    labels = task.label_set
    if not labels:
        return None
    label = majority_label(labels, train)
    scores = [float(evaluator.metric(ex, {task.output.name: label})) for ex in examples]
    ci = bootstrap_ci(scores, seed=seed)
    ref = [doc["candidates"][0]["per_example"][ex.id] for ex in examples]
    diff = paired_bootstrap(ref, scores, seed=seed)
    test = paired_test(ref, scores, seed=seed)
    return {"label": label, "mean": round(ci.mean, 6), "ci": [round(ci.low, 6), round(ci.high, 6)], "n": ci.n,
            "vs_reference": {"diff": round(diff["diff"], 6), "low": round(diff["low"], 6),
                             "high": round(diff["high"], 6), "p_value": test["p_value"], "test": test["test"]}}
