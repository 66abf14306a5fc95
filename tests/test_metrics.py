"""Every metric, including regex extraction and user functions."""

import pytest

from conftest import ROOT
from optimizer.data import Example
from optimizer.errors import MetricError
from optimizer.metrics import (build_metric, contains, exact_match, last_number, map_to_label, normalize, numeric,
                               token_f1)
from optimizer.task import task_from_dict


def task_with(metric, labels=None):
    return task_from_dict({
        "task": "t", "dataset": {"files": {"train": "x.jsonl"}},
        "splits": {"train": {"from": "train"}, "validation": {"from": "train"}, "test": {"from": "train"}},
        "inputs": [{"name": "text"}], "output": {"name": "answer", **({"labels": labels} if labels else {})},
        "instruction": "Do it.", "metric": metric}, base_dir=ROOT / "tests")


def ex(out):
    return Example("train:0", {"text": "x"}, out)


def test_normalize():
    assert normalize("  The  Answer, is: 42! ") == "answer is 42"


def test_exact_match():
    assert exact_match("Paris", "paris.") == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0


def test_contains():
    assert contains("Paris", "It is Paris, France") == 1.0
    assert contains("Paris", "Parisian") == 0.0


def test_token_f1():
    assert token_f1("new york city", "new york") == pytest.approx(0.8)
    assert token_f1("paris", "") == 0.0


def test_numeric_last_number():
    assert last_number("12 apples and 1,234.5 pears") == 1234.5
    assert numeric("72", "so the answer is 72.") == 1.0
    assert numeric("72", "72 then 73") == 0.0
    assert numeric("-3", "it drops to -3") == 1.0
    assert numeric("5", "no number") == 0.0


def test_map_to_label():
    labels = ["positive", "negative"]
    assert map_to_label("Positive.", labels) == "positive"
    assert map_to_label("negative review", labels) == "negative"
    assert map_to_label("it is negative", labels) == "negative"
    assert map_to_label("it is positive or negative", labels) is None
    assert map_to_label("neutral", labels) is None


def test_label_accuracy_uses_label_set():
    m = build_metric(task_with("label_accuracy", {"0": "negative", "1": "positive"}))
    assert m(ex("positive"), {"answer": "Positive!"}) == 1.0
    assert m(ex("positive"), {"answer": "negative"}) == 0.0
    with pytest.raises(MetricError, match="label set"):
        build_metric(task_with("label_accuracy"))


def test_regex_then_numeric_and_exact():
    m = build_metric(task_with({"name": "regex", "pattern": r"answer is (\S+)", "then": "numeric"}))
    assert m(ex("42"), {"answer": "so the answer is 42."}) == 1.0
    assert m(ex("42"), {"answer": "42"}) == 0.0  # nothing extracted
    m = build_metric(task_with({"name": "regex", "pattern": r"\[(.*?)\]"}))
    assert m(ex("Paris"), {"answer": "city: [paris]"}) == 1.0


def test_custom_metric_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "my_metric.py").write_text(
        "def score(example, prediction):\n    return example.answer.lower() == prediction.answer.strip().lower()\n"
        "def half(example, prediction):\n    return 0.5\n"
        "def boom(example, prediction):\n    raise ValueError('bad')\n")
    t = task_with({"name": "custom", "function": "my_metric.py:score"})
    t._path = tmp_path / "task.yaml"
    m = build_metric(t)
    assert m(ex("Yes"), {"answer": " yes"}) == 1.0
    assert m(ex("Yes"), {"answer": "no"}) == 0.0
    t = task_with({"name": "custom", "function": "my_metric:half"})
    t._path = tmp_path / "task.yaml"
    assert build_metric(t)(ex("a"), {"answer": "b"}) == 0.5
    t = task_with({"name": "custom", "function": "my_metric.py:boom"})
    t._path = tmp_path / "task.yaml"
    with pytest.raises(MetricError, match="raised ValueError.*train:0"):
        build_metric(t)(ex("a"), {"answer": "b"})
    t = task_with({"name": "custom", "function": "nope.py:score"})
    t._path = tmp_path / "task.yaml"
    with pytest.raises(MetricError, match="not found"):
        build_metric(t)
    t = task_with({"name": "custom", "function": "my_metric.py:missing"})
    t._path = tmp_path / "task.yaml"
    with pytest.raises(MetricError, match="no function"):
        build_metric(t)
