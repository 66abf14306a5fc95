"""Metrics: how one prediction is scored against one example (a float in [0, 1]).

Built in: ``exact_match`` (normalised), ``label_accuracy`` (prediction mapped
onto a fixed label set), ``contains``, ``token_f1``, ``numeric`` (last number,
GSM8K style), ``regex`` (extract, then any of the above), ``json_fields`` (a
JSON answer key by key, with any of the text metrics), ``judge`` (an LM says whether
the answer meets a rubric) and ``custom`` (a user
function ``module:function`` or ``path/to/file.py:function`` called as
``fn(example, prediction)`` with DSPy objects, returning a float or bool).

Each is a ``Metric`` subclass registered in ``optimizer.plugins.METRICS`` under
its ``metric.name``; what it needs from the task file is said by capabilities
(``needs_labels``, ``needs_pattern``, ``needs_function``, ``needs_json``,
``needs_lm``, ``compares_text``),
which the task schema and ``build_metric`` read.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import json
import re
import string
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

from .answers import json_problem, load_json
from .errors import MetricError
from .plugins import METRICS
from .task import MetricSpec, TaskSpec

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize(text: Any) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD style)."""
    s = str(text if text is not None else "").lower()
    s = _PUNCT.sub(" ", s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(gold: str, pred: str) -> float:
    return float(normalize(gold) == normalize(pred))


def contains(gold: str, pred: str) -> float:
    g = normalize(gold)
    return float(bool(g) and f" {g} " in f" {normalize(pred)} ")


def token_f1(gold: str, pred: str) -> float:
    g, p = normalize(gold).split(), normalize(pred).split()
    if not g and not p:
        return 1.0
    if not g or not p:
        return 0.0
    common = collections.Counter(g) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def last_number(text: Any) -> float | None:
    found = _NUMBER.findall(str(text if text is not None else ""))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def numeric(gold: str, pred: str) -> float:
    g, p = last_number(gold), last_number(pred)
    if g is None or p is None:
        return 0.0
    return float(abs(g - p) <= 1e-6 * max(1.0, abs(g)))


def map_to_label(pred: str, labels: list[str]) -> str | None:
    """The label a free-text prediction names, or None.

    Exact (normalised) match first, then the label whose words start the
    prediction, then the only label mentioned anywhere in it.
    """
    p = normalize(pred)
    norm = {normalize(lab): lab for lab in labels}
    if p in norm:
        return norm[p]
    for n, lab in sorted(norm.items(), key=lambda kv: -len(kv[0])):
        if n and (p == n or p.startswith(n + " ")):
            return lab
    mentioned = [lab for n, lab in norm.items() if n and f" {n} " in f" {p} "]
    return mentioned[0] if len(mentioned) == 1 else None


def majority_label(labels: list[str], examples: Any) -> str:
    """The most frequent gold label of ``examples`` (ties: the order of ``labels``): the label prior."""
    counts = {lab: 0 for lab in labels}
    for ex in examples:
        lab = map_to_label(str(ex.output), labels)
        if lab is not None:
            counts[lab] += 1
    return max(labels, key=lambda lab: (counts[lab], -labels.index(lab)))


class Metric(ABC):
    """Scores a parsed prediction (dict of output fields) against an Example, in [0, 1].

    Built from the task and its ``metric:`` spec; ``name`` is what summaries show (``exact_match``,
    ``regex>numeric``, ``custom:module:fn``)."""

    #: the metric scores gold against predicted text (``score_text``): usable as a regex metric's ``then``
    compares_text: ClassVar[bool] = False
    #: needs a fixed label set (``metric.labels`` or ``output.labels``)
    needs_labels: ClassVar[bool] = False
    #: needs ``metric.pattern`` (a regular expression)
    needs_pattern: ClassVar[bool] = False
    #: needs ``metric.function`` (``module:function`` or ``file.py:function``)
    needs_function: ClassVar[bool] = False
    #: scores JSON answers: needs ``output.format: json``
    needs_json: ClassVar[bool] = False
    #: asks an LM (``metric.lm``, with ``metric.rubric``): the run attaches a backend with its cache and budget
    needs_lm: ClassVar[bool] = False

    def __init__(self, task: TaskSpec, spec: MetricSpec):
        self.name = spec.name
        self.output_name = task.output.name
        self.labels = spec.labels or task.label_set
        if self.needs_labels and not self.labels:
            raise MetricError(f"{spec.name} needs a fixed label set", file=str(task.path), field="metric.labels",
                              fix="add output.labels or metric.labels")

    @abstractmethod
    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        """The score of ``prediction`` for ``example``."""

    def predicted_text(self, prediction: dict[str, Any]) -> str:
        v = prediction.get(self.output_name)
        return "" if v is None else str(v)


class TextMetric(Metric):
    """A function of the gold answer and the predicted text (the output field)."""

    compares_text = True

    @abstractmethod
    def score_text(self, gold: str, pred: str) -> float:
        """The score of predicted text ``pred`` against the gold answer."""

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        return self.score_text(example.output, self.predicted_text(prediction))


class ExactMatch(TextMetric):
    def score_text(self, gold: str, pred: str) -> float:
        return exact_match(gold, pred)


class Contains(TextMetric):
    def score_text(self, gold: str, pred: str) -> float:
        return contains(gold, pred)


class TokenF1(TextMetric):
    def score_text(self, gold: str, pred: str) -> float:
        return token_f1(gold, pred)


class Numeric(TextMetric):
    def score_text(self, gold: str, pred: str) -> float:
        return numeric(gold, pred)


class LabelAccuracy(TextMetric):
    needs_labels = True

    def score_text(self, gold: str, pred: str) -> float:
        mapped = map_to_label(pred, self.labels or [])
        return float(mapped is not None and normalize(mapped) == normalize(gold))


class RegexMetric(Metric):
    """Extract with ``pattern`` (group 1, else the whole match), then score with ``then`` (a text metric)."""

    needs_pattern = True

    def __init__(self, task: TaskSpec, spec: MetricSpec):
        super().__init__(task, spec)
        then = spec.then or "exact_match"
        self.inner = METRICS.get(then)(task, spec.model_copy(update={"name": then}))
        self.rx = re.compile(spec.pattern or "")
        self.name = f"regex>{then}"

    def extract(self, text: str) -> str:
        m = self.rx.search(text)
        if m is None:
            return ""
        return (m.group(1) if m.groups() else m.group(0)).strip()

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        return self.inner.score_text(example.output, self.extract(self.predicted_text(prediction)))


class JsonFields(Metric):
    """A JSON answer (``output.format: json``) scored key by key: the mean over the gold object's keys (or
    ``metric.fields``) of ``then`` (a text metric, ``exact_match`` by default) on each key's value, values
    that are not strings written as JSON; 0 for an answer that is not JSON or fails ``output.schema``."""

    needs_json = True

    def __init__(self, task: TaskSpec, spec: MetricSpec):
        super().__init__(task, spec)
        if task.output.answer_format != "json":
            raise MetricError("json_fields scores JSON answers", file=str(task.path), field="output.format",
                              fix="set `format: json` on the output, or pick a text metric")
        then = spec.then or "exact_match"
        self.inner = METRICS.get(then)(task, spec.model_copy(update={"name": then}))
        self.fields = spec.fields
        self.schema = task.output.json_schema
        self.name = f"json_fields>{then}"

    @staticmethod
    def _text(v: Any) -> str:
        return v if isinstance(v, str) else "" if v is None else json.dumps(v, ensure_ascii=False)

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        gold, _ = load_json(example.output)
        text = self.predicted_text(prediction)
        if json_problem(text, self.schema) is not None:
            return 0.0
        pred, _ = load_json(text)
        if not isinstance(gold, dict):  # a list or a scalar: the whole value
            return self.inner.score_text(self._text(gold), self._text(pred))
        keys = self.fields or list(gold)
        if not isinstance(pred, dict) or not keys:
            return 0.0
        return sum(self.inner.score_text(self._text(gold.get(k)), self._text(pred.get(k))) for k in keys) / len(keys)


class JudgeMetric(Metric):
    """An LM judges each answer against the gold answer and the ``rubric``: 1 when it says yes, else 0.

    Its calls go through the backend the run attaches (``attach``: the run's response cache, budget and
    spend log; the summary counts them as ``judge`` apart from the task's calls). Used outside a run (bench,
    the parity check) it opens the profile's backend itself, with the default response cache. Greedy, so a
    cached judgment is the same judgment; ``request(temperature=, sample=)`` draws sampled judgments for
    ``experiments/judge_noise.py``, which measures a judge's noise. An empty answer scores 0 without a call."""

    needs_lm = True

    def __init__(self, task: TaskSpec, spec: MetricSpec):
        super().__init__(task, spec)
        self.rubric = spec.rubric or ""
        self.profile_ref = spec.lm or ""
        self.task = task
        self.backend: Any = None
        self.chat = True
        self._opening = threading.Lock()  # a bench scores on several threads: one backend of its own
        self.name = f"judge:{self.profile_ref}"

    def attach(self, backend: Any) -> None:
        """Judge through ``backend`` (its profile says chat or completion)."""
        self.backend = backend
        self.chat = backend.profile.resolved_adapter == "chat"

    def _own_backend(self) -> Any:
        from .lm import create_backend
        from .run.inputs import judge_profile

        with self._opening:
            if self.backend is None:
                self.attach(create_backend(judge_profile(self.task)))
        return self.backend

    def request(self, example: Any, answer: str, *, temperature: float | None = None, sample: int = 0) -> Any:
        """The judge's one request for ``answer`` to ``example``."""
        from .lm.base import LMRequest

        shown = "\n".join(f"{f.label}: {example.inputs.get(f.name, '')}" for f in self.task.inputs)
        text = (f"{shown}\nReference answer: {example.output}\nAnswer to judge: {answer}\n\n"
                f"Rubric: {self.rubric}\nDoes the answer to judge meet the rubric? Reply yes or no.")
        t = temperature or 0.0
        if self.chat:
            return LMRequest.chat([{"role": "system", "content": "You are a strict, fair grader."},
                                   {"role": "user", "content": text}], max_tokens=3, temperature=t, sample=sample)
        return LMRequest(prompt=text + "\nVerdict (yes or no):", max_tokens=3, temperature=t, stop=("\n",),
                         sample=sample)

    @staticmethod
    def verdict(text: str) -> float:
        """1.0 when the reply says yes (its first word), else 0.0."""
        words = normalize(text).split()
        return float(bool(words) and words[0] in ("yes", "y", "true"))

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        answer = self.predicted_text(prediction).strip()
        if not answer:
            return 0.0
        backend = self.backend or self._own_backend()
        return self.verdict(backend.complete(self.request(example, answer)).text)


class CustomMetric(Metric):
    """A user function ``fn(example, prediction)`` on DSPy objects, returning a float or bool (or a dict
    with ``score``)."""

    needs_function = True

    def __init__(self, task: TaskSpec, spec: MetricSpec):
        super().__init__(task, spec)
        self.task_file = str(task.path) if task.path else None
        self.input_names = task.input_names
        self.function = spec.function
        self.fn = load_function(spec.function or "", task.base_dir, task_file=self.task_file)
        self.name = f"custom:{spec.function}"

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        import dspy

        ex = dspy.Example(**example.to_dict(self.output_name)).with_inputs(*self.input_names)
        try:
            value = self.fn(ex, dspy.Prediction(**prediction))
        except Exception as exc:
            raise MetricError(f"custom metric {self.function} raised {type(exc).__name__}: {exc} on example "
                              f"{example.id}", file=self.task_file, field="metric.function",
                              fix="make the function return a float or bool for every prediction") from None
        if isinstance(value, dict) and "score" in value:
            value = value["score"]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MetricError(f"custom metric {self.function} returned {type(value).__name__}, not a number",
                              file=self.task_file, field="metric.function", fix="return a float or bool") from None


def load_function(ref: str, base_dir: Path, *, task_file: str | None = None) -> Callable[..., Any]:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    if ":" not in ref:
        raise MetricError(f"custom metric {ref!r} is not of the form module:function", file=task_file,
                          field="metric.function", fix="write `my_metrics:score` or `metrics.py:score`")
    target, _, attr = ref.rpartition(":")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            path = path if path.is_absolute() else base_dir / path
            if not path.exists():
                raise MetricError(f"metric file not found: {path}", file=task_file, field="metric.function",
                                  fix="correct the path (relative to the task file)")
            mod_name = f"_optimizer_user_metric_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if str(base_dir) not in sys.path:
                sys.path.insert(0, str(base_dir))
            module = importlib.import_module(target)
    except MetricError:
        raise
    except Exception as exc:
        raise MetricError(f"cannot import {target!r}: {type(exc).__name__}: {exc}", file=task_file,
                          field="metric.function", fix="check the module path and that it imports cleanly") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise MetricError(f"{target!r} has no function {attr!r}", file=task_file, field="metric.function",
                          fix="name a function defined in that module")
    return fn



def build_metric(task: TaskSpec, spec: MetricSpec | None = None) -> Metric:
    """The metric the task's ``metric:`` (or ``spec``) names, from ``optimizer.plugins.METRICS``."""
    spec = spec or task.metric
    return METRICS.get(spec.name)(task, spec)
