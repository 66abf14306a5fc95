"""Label-likelihood scoring for classification: read the answer off the LM's next-token
log-probabilities instead of parsing generated text.

The prompt is the same; the call asks for one token with its top-k log-probabilities
(llama.cpp in-process, or ``/v1/completions`` ``logprobs`` on OpenAI-compatible servers). Each
label is scored by the best token that starts it (" positive" or " pos" for ``positive``);
the prediction is the best-scoring label, never free text to parse (no label among the top-k:
no answer). Optional contextual
calibration (Calibrate Before Use, Zhao et al. 2021) subtracts each label's score on a
content-free input ("N/A") under the same prompt, which removes the prompt's bias toward one label.
Batch calibration (Zhou et al. 2024) subtracts instead the log of each label's mean probability over a
batch of real inputs (the validation inputs the prompt was scored on; no labels, no extra LM call), so
the offsets are those of the task's input distribution rather than of one artificial input; the
offsets are fixed once estimated and exported with the prompt like contextual calibration's.
"""

from __future__ import annotations

import math

from .plain_client import label_scores

TOP_K = 20
CONTENT_FREE = "N/A"
SCORINGS = ("generate", "likelihood", "calibrated", "batch")
LABEL_READOUTS = SCORINGS[1:]  # read off the same label log-probabilities of one response
# the readout whose offsets need the scores of a whole batch of inputs first: read when a trial has scored them all
BATCH = "batch"


def content_free_inputs(names: list[str]) -> dict[str, str]:
    """The content-free input of contextual calibration: every input field set to "N/A"."""
    return {n: CONTENT_FREE for n in names}


def label_logprobs(top: dict[str, float], labels: list[str]) -> dict[str, float]:
    """Each label's log-probability estimate from one position's top-k tokens (-inf when absent); the
    matching rule is the plain client's, so exported prompts read labels exactly as the optimizer did."""
    return {lab: -math.inf if s is None else s for lab, s in label_scores(top, labels).items()}


def pick_label(scores: dict[str, float], calibration: dict[str, float] | None = None) -> str | None:
    """The best label, after subtracting content-free scores when given; None if no label was seen."""
    adjusted = {}
    for lab, s in scores.items():
        if s == -math.inf:
            adjusted[lab] = -math.inf
            continue
        c = (calibration or {}).get(lab)
        adjusted[lab] = s - c if c is not None and c != -math.inf else s
    best = max(adjusted.items(), key=lambda kv: kv[1])
    return None if best[1] == -math.inf else best[0]


def batch_offsets(rows: list[dict[str, float]], labels: list[str]) -> dict[str, float]:
    """Batch calibration offsets: log of each label's mean probability (softmax over the labels of each
    row) across ``rows``; -inf for a label no row saw."""
    sums = dict.fromkeys(labels, 0.0)
    n = 0
    for row in rows:
        finite = [v for v in row.values() if v != -math.inf]
        if not finite:
            continue
        top = max(finite)
        z = sum(math.exp(v - top) for v in finite)
        for lab in labels:
            v = row.get(lab, -math.inf)
            sums[lab] += 0.0 if v == -math.inf else math.exp(v - top) / z
        n += 1
    return {lab: math.log(s / n) if n and s > 0 else -math.inf for lab, s in sums.items()}


def offsets_to_json(offsets: tuple[tuple[str, float], ...]) -> dict[str, float | None]:
    """Batch offsets as JSON (a run's summary, a trial attribute, an export): -inf, a label no input saw, as null."""
    return {lab: (round(v, 6) if math.isfinite(v) else None) for lab, v in offsets}


def offsets_from_json(stored: dict[str, float | None] | None) -> tuple[tuple[str, float], ...]:
    return tuple((str(lab), -math.inf if v is None else float(v)) for lab, v in (stored or {}).items())

