"""Metrics: how one prediction is scored against one example (a float in [0, 1]).

Built in: ``exact_match`` (normalised), ``label_accuracy`` (prediction mapped
onto a fixed label set), ``contains``, ``token_f1``, ``numeric`` (last number,
GSM8K style), ``regex`` (extract, then any of the above) and ``custom`` (a user
function ``module:function`` or ``path/to/file.py:function`` called as
``fn(example, prediction)`` with DSPy objects, returning a float or bool).
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import re
import string
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import MetricError
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


class Metric:
    """Scores a parsed prediction (dict of output fields) against an Example."""

    def __init__(self, name: str, fn: Callable[[Any, Any], float], output_name: str):
        self.name = name
        self._fn = fn
        self.output_name = output_name

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        return self._fn(example, prediction)


_SIMPLE = {"exact_match": exact_match, "contains": contains, "token_f1": token_f1, "numeric": numeric}


def _simple(name: str, labels: list[str] | None, task: TaskSpec) -> Callable[[str, str], float]:
    if name == "label_accuracy":
        if not labels:
            raise MetricError("label_accuracy needs a fixed label set", file=str(task.path), field="metric.labels",
                              fix="add output.labels or metric.labels")
        def label_accuracy(gold: str, pred: str) -> float:
            mapped = map_to_label(pred, labels)
            return float(mapped is not None and normalize(mapped) == normalize(gold))
        return label_accuracy
    return _SIMPLE[name]


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
    spec = spec or task.metric
    out = task.output.name
    task_file = str(task.path) if task.path else None

    def pred_text(prediction: dict[str, Any]) -> str:
        v = prediction.get(out)
        return "" if v is None else str(v)

    if spec.name == "custom":
        fn = load_function(spec.function or "", task.base_dir, task_file=task_file)

        def custom(example: Any, prediction: dict[str, Any]) -> float:
            import dspy

            ex = dspy.Example(**example.to_dict(out)).with_inputs(*task.input_names)
            pred = dspy.Prediction(**prediction)
            try:
                value = fn(ex, pred)
            except Exception as exc:
                raise MetricError(f"custom metric {spec.function} raised {type(exc).__name__}: {exc} on example "
                                  f"{example.id}", file=task_file, field="metric.function",
                                  fix="make the function return a float or bool for every prediction") from None
            if isinstance(value, dict) and "score" in value:
                value = value["score"]
            try:
                return float(value)
            except (TypeError, ValueError):
                raise MetricError(f"custom metric {spec.function} returned {type(value).__name__}, not a number",
                                  file=task_file, field="metric.function",
                                  fix="return a float or bool") from None
        return Metric(f"custom:{spec.function}", custom, out)

    if spec.name == "regex":
        inner = _simple(spec.then or "exact_match", spec.labels or task.label_set, task)
        rx = re.compile(spec.pattern or "")

        def extract(text: str) -> str:
            m = rx.search(text)
            if m is None:
                return ""
            return (m.group(1) if m.groups() else m.group(0)).strip()

        def regex_metric(example: Any, prediction: dict[str, Any]) -> float:
            return inner(example.output, extract(pred_text(prediction)))
        return Metric(f"regex>{spec.then or 'exact_match'}", regex_metric, out)

    simple = _simple(spec.name, spec.labels or task.label_set, task)

    def builtin(example: Any, prediction: dict[str, Any]) -> float:
        return simple(example.output, pred_text(prediction))
    return Metric(spec.name, builtin, out)
