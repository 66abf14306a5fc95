"""A scripted LM backend for fast unit tests of the search logic (never the only proof of a feature)."""

from __future__ import annotations

import hashlib
import re

from optimizer.lm.base import LMBackend, LMRequest, LMResponse
from optimizer.lm.profiles import LMProfile


class ScriptedBackend(LMBackend):
    """Answers like a model that gets better with more demos.

    ``answers`` maps an input text to its gold label. With k demos in the prompt, an
    input is answered correctly when a stable hash of it, mod 10, is below 3 + k;
    otherwise it answers ``wrong``.
    """

    name = "scripted"

    def __init__(self, answers: dict[str, str], *, input_prefix: str = "Review:", output_prefix: str = "Sentiment:",
                 wrong: str = "negative", cache=None):
        super().__init__(LMProfile(name="scripted", backend="local", model="scripted"), cache)
        self.answers = answers
        self.input_prefix = input_prefix
        self.output_prefix = output_prefix
        self.wrong = wrong
        self.prompts: list[str] = []

    @property
    def model_id(self) -> str:
        return "scripted"

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt if request.prompt is not None else request.messages[-1][1]
        self.prompts.append(prompt)
        k = prompt.count(self.output_prefix) - 1
        last = prompt.rsplit(self.input_prefix, 1)[-1].split("\n")[0].strip()
        gold = self.answers.get(last)
        h = int(hashlib.sha1(last.encode()).hexdigest(), 16) % 10
        text = f" {gold}\n" if gold is not None and h < 3 + k else f" {self.wrong}\n"
        return LMResponse(text=text, prompt_tokens=len(re.findall(r"\S+", prompt)), completion_tokens=1)
