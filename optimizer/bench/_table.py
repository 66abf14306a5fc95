"""The bench table: terminal (rich), markdown and CSV renderings of a bench document."""

from __future__ import annotations

import csv
import io
import math
from typing import Any


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ref = doc["reference"]
    head = ["rank", "candidate", "demos", "mean", "95% CI", f"Δ vs {ref} [95% CI]", "p", "prompt tokens/call",
            "latency/call", "cost/1k calls"]
    body = []
    for c in doc["candidates"]:
        vs = c.get("vs_reference")
        delta = "(reference)" if vs is None else f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]"
        lat = "—" if c["latency_s_per_call"] is None else f"{c['latency_s_per_call']:.3f} s (n={c['latency_calls']})"
        body.append([str(c["rank"]), c["name"], str(c["n_demos"]), _f(c["mean"]),
                     f"[{_f(c['ci'][0])}, {_f(c['ci'][1])}]", delta, "—" if vs is None else _p(vs["p_value"]),
                     _f(c["prompt_tokens_per_call"], 1), lat, _f(c["cost_per_1000_calls"], 4)])
    prior = doc.get("label_prior")
    if prior:  # the trivial baseline: always the most frequent training label (no LM call, no rank)
        vs = prior["vs_reference"]
        body.append(["—", f"label prior (always {prior['label']!r})", "0", _f(prior["mean"]),
                     f"[{_f(prior['ci'][0])}, {_f(prior['ci'][1])}]",
                     f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]", _p(vs["p_value"]), "—", "—", "—"])
    return head, body


def caption(doc: dict[str, Any]) -> str:
    lm = doc["lm"]
    test = {"mcnemar_exact": "exact McNemar (0/1 scores)", "paired_bootstrap": "paired bootstrap"}[doc["p_value_test"]]
    cost = "" if doc.get("prices") else "; cost: the profile has no prices"
    judge = doc.get("judge")
    judged = "" if not judge else (f"; judge {judge.get('lm')}: {judge['calls']} calls ({judge['cache_hits']} cached), "
                                   "not in the task's tokens, latency or cost")
    program = ("; a program's tokens, latency and cost per call are per answer, summed over its steps"
               if any(c.get("steps") for c in doc["candidates"]) else "")
    return (f"{doc['task']}: {doc['split']} split, {doc['examples']} examples × {doc['repeats']} repeat(s), metric "
            f"{doc['metric']}, LM {lm.get('name')} ({lm.get('model')}); 95% percentile-bootstrap intervals; p: {test} "
            f"against {doc['reference']}{cost}{judged}{program}")


def to_markdown(doc: dict[str, Any]) -> str:
    head, body = table_rows(doc)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i not in (1,) else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in row) + " |" for row in body]
    return "\n".join(lines) + "\n\n" + caption(doc)


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "candidate", "source", "n_demos", "n", "mean", "ci_low", "ci_high", "diff_vs_reference",
                "diff_low", "diff_high", "p_value", "p_test", "prompt_tokens_per_call", "completion_tokens_per_call",
                "latency_s_per_call", "latency_calls", "cost_per_1000_calls", "parse_failures"])
    for c in doc["candidates"]:
        vs = c.get("vs_reference") or {}
        w.writerow([c["rank"], c["name"], c["source"], c["n_demos"], c["n"], c["mean"], c["ci"][0], c["ci"][1],
                    vs.get("diff", ""), vs.get("low", ""), vs.get("high", ""), vs.get("p_value", ""),
                    vs.get("test", ""), c["prompt_tokens_per_call"], c["completion_tokens_per_call"],
                    c["latency_s_per_call"], c["latency_calls"], c["cost_per_1000_calls"], c["parse_failures"]])
    return buf.getvalue()


def to_rich(doc: dict[str, Any]):
    from rich.table import Table

    head, body = table_rows(doc)
    t = Table(title=f"bench: {doc['task']} ({doc['split']}, {doc['examples']} examples)")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 1 else "right")
    for row in body:
        t.add_row(*row)
    t.caption = caption(doc)
    return t
