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
    otherwise it answers ``wrong``. Asked for logprobs, it scores each label: the gold
    label leans up by 0.5 + 0.3 k, ``wrong`` carries a bias of 1 (uncalibrated
    likelihood is wrong on gold != wrong below 2 demos; calibration fixes it).
    """

    name = "scripted"

    def __init__(self, answers: dict[str, str], *, input_prefix: str = "Review:", output_prefix: str = "Sentiment:",
                 wrong: str = "negative", cache=None, labels: tuple[str, ...] = ("negative", "positive")):
        super().__init__(LMProfile(name="scripted", backend="local", model="scripted"), cache)
        self.answers = answers
        self.input_prefix = input_prefix
        self.output_prefix = output_prefix
        self.wrong = wrong
        self.labels = labels
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
        right = gold is not None and h < 3 + k
        text = f" {gold}\n" if right else f" {self.wrong}\n"
        lp = None
        if request.logprobs:
            # label likelihoods: leaning to the gold label by more with more demos, plus a bias toward
            # ``wrong`` that a content-free input ("N/A") exposes; calibration removes that bias
            lean = 0.5 + 0.3 * k if gold is not None else 0.0
            lp = [{f" {lab}": (lean if lab == gold else 0.0) + (1.0 if lab == self.wrong else 0.0) - 3.0
                   for lab in self.labels}]
            text = max(lp[0], key=lp[0].get)
        return LMResponse(text=text, prompt_tokens=len(re.findall(r"\S+", prompt)), completion_tokens=1, logprobs=lp)


class JudgeBackend(LMBackend):
    """A judge for the ``judge`` metric: says yes when the answer to judge equals the reference answer
    (normalised), no otherwise; ``flip`` is the share of sampled (temperature > 0) judgments it turns over,
    picked by a stable hash of the request, so that sampling noise can be measured."""

    name = "scripted-judge"

    def __init__(self, cache=None, flip: float = 0.0, chat: bool = True):
        super().__init__(LMProfile(name="scripted-judge", backend="local", model="scripted-judge",
                                   adapter="chat" if chat else "completion"), cache)
        self.flip = flip
        self.requests: list[LMRequest] = []

    @property
    def model_id(self) -> str:
        return "scripted-judge"

    def _generate(self, request: LMRequest) -> LMResponse:
        from optimizer.metrics import normalize

        self.requests.append(request)
        text = request.prompt if request.prompt is not None else request.messages[-1][1]
        ref = re.search(r"Reference answer: (.*)", text).group(1)
        ans = re.search(r"Answer to judge: (.*)", text).group(1)
        yes = normalize(ref) == normalize(ans)
        if request.temperature > 0:
            h = int(hashlib.sha1(f"{text}|{request.sample}".encode()).hexdigest(), 16) % 1000
            yes = yes != (h < self.flip * 1000)
        return LMResponse(text=" yes" if yes else " no", prompt_tokens=len(text.split()), completion_tokens=1)
