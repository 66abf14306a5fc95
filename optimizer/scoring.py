"""Label-likelihood scoring for classification: read the answer off the LM's next-token
log-probabilities instead of parsing generated text.

The prompt is the same; the call asks for one token with its top-k log-probabilities
(llama.cpp in-process, or ``/v1/completions`` ``logprobs`` on OpenAI-compatible servers). Each
label is scored by the best token that starts it (" positive" or " pos" for ``positive``);
the prediction is the best-scoring label, never free text to parse (no label among the top-k:
no answer). Optional contextual
calibration (Calibrate Before Use, Zhao et al. 2021) subtracts each label's score on a
content-free input ("N/A") under the same prompt, which removes the prompt's bias toward one label.
"""

from __future__ import annotations

import math

from .plain_client import label_scores

TOP_K = 20
CONTENT_FREE = "N/A"
SCORINGS = ("generate", "likelihood", "calibrated")
LABEL_READOUTS = SCORINGS[1:]  # read off the same label log-probabilities of one response


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
