"""The Evaluator that ``optimize bench`` and ``optimize export`` render and score prompts with.

It is the Evaluator ``engine.make_evaluator`` builds for the task and LM profile (same adapter, metric,
decoding), so a prompt rendered here is the prompt the optimizer scored, byte for byte; its requests
can carry a sample index (a distinct draw, and a distinct cache key, under sampled decoding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .evaluate import Evaluator
from .lm import LMBackend
from .lm.profiles import LMProfile
from .program import Candidate
from .task import TaskSpec


class SampleEvaluator(Evaluator):
    """An Evaluator whose requests carry a sample index (a distinct draw under sampled decoding)."""

    def __init__(self, *args: Any, sample: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sample = sample

    def request(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None):
        req = super().request(candidate, inputs, exclude)
        return dataclasses.replace(req, sample=self.sample) if self.sample else req


def renderer(task: TaskSpec, profile: LMProfile, backend: LMBackend | None = None, *, sample: int = 0) -> SampleEvaluator:
    """The Evaluator ``make_evaluator`` would build, with a sample index (backend None: rendering only)."""
    from .engine import make_evaluator

    base = make_evaluator(task, profile, backend)  # type: ignore[arg-type]
    if task.steps:  # a program: its steps' requests carry the sample index
        from .steps import ProgramEvaluator

        return ProgramEvaluator(task, backend, base.metric, adapter=base.adapter_kind,  # type: ignore[return-value]
                                profile_max_tokens=profile.max_tokens, temperature=base.temperature, sample=sample)
    return SampleEvaluator(task, backend, base.metric, adapter=base.adapter_kind,  # type: ignore[arg-type]
                           max_tokens=base.max_tokens, temperature=base.temperature, sample=sample)
