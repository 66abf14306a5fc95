"""Every metric registered in ``optimizer.plugins.METRICS`` meets the same contract.

Each is built from a spec its capabilities complete (``needs_pattern``: a pattern that extracts the whole
answer, ``needs_function``: a user function file, ``needs_labels``: the task's label set), on a task whose
labels are numbers so that every metric, ``numeric`` included, can tell a right answer from a wrong one.
The contract: a float in [0, 1] for any prediction (missing, None, empty, long), the same score twice, 1 for
the gold answer and less for a wrong label, ``score_text`` for a ``compares_text`` metric (and the schema
taking it as a regex ``then``), and the schema or ``build_metric`` refusing a spec that lacks what the metric
needs. ``test_a_new_metric_is_one_class_and_its_registration`` registers a toy metric and runs the same checks
on it."""

from __future__ import annotations

import pytest

from conftest import ROOT
from fakes import JudgeBackend
from optimizer.data import Example
from optimizer.errors import ConfigError, MetricError
from optimizer.metrics import Metric, TextMetric, build_metric, normalize
from optimizer.plugins import METRICS
from optimizer.task import task_from_dict

GOLD, WRONG = "42", "17"
PREDICTIONS = [{}, {"answer": None}, {"answer": ""}, {"answer": GOLD}, {"answer": f"The answer is {GOLD}."},
               {"answer": WRONG}, {"answer": "x" * 500}, {"answer": f"{WRONG} or {GOLD}"}, {"answer": 42}]


@pytest.fixture
def metric_file(tmp_path):
    (tmp_path / "user_metric.py").write_text(
        "def score(example, prediction):\n"
        "    return str(example.answer).strip() == str(getattr(prediction, 'answer', '') or '').strip()\n")
    return tmp_path


def task_dict(metric, labels=True, json_answer=False) -> dict:
    """A task whose labels are numbers; with ``json_answer`` an output read as JSON (no labels: a label is one
    line)."""
    output = {"name": "answer", **({"labels": {"a": GOLD, "b": WRONG}} if labels and not json_answer else {}),
              **({"format": "json"} if json_answer else {})}
    return {"task": "t", "dataset": {"files": {"train": "x.jsonl"}},
            "splits": {"train": {"from": "train"}, "validation": {"from": "train"}, "test": {"from": "train"}},
            "inputs": [{"name": "text"}], "output": output, "instruction": "Answer.", "metric": metric}


def spec_for(cls) -> dict:
    """The smallest spec the metric's capabilities ask for."""
    spec = {"name": cls_name(cls)}
    if cls.needs_pattern:
        spec["pattern"] = r"(?s)(.*)"
    if cls.needs_function:
        spec["function"] = "user_metric.py:score"
    if cls.needs_lm:
        spec.update(lm="local", rubric="The answer is the same number as the reference answer.")
    return spec


def cls_name(cls) -> str:
    return next(n for n in METRICS.names() if METRICS.get(n) is cls)


def build(cls, base_dir, **spec):
    task = task_from_dict(task_dict({**spec_for(cls), **spec}, json_answer=cls.needs_json), base_dir=base_dir)
    metric = build_metric(task)
    if cls.needs_lm:  # a run attaches the judge's backend; here a scripted judge
        metric.attach(JudgeBackend())
    return task, metric


# ------------------------------------------------------------------------------------------ the checks

def check_capabilities(cls, base_dir) -> None:
    assert issubclass(cls, Metric)
    for flag in ("compares_text", "needs_labels", "needs_pattern", "needs_function", "needs_json", "needs_lm"):
        assert isinstance(getattr(cls, flag), bool), flag
    if cls.compares_text:
        assert issubclass(cls, TextMetric) or callable(getattr(cls, "score_text", None))


def check_scores_are_floats_in_the_unit_interval(cls, base_dir) -> None:
    task, m = build(cls, base_dir)
    assert isinstance(m, cls) and isinstance(m.name, str) and m.name and m.output_name == "answer"
    ex = Example("train:0", {"text": "what is six times seven"}, GOLD)
    for pred in PREDICTIONS:
        value = m(ex, pred)
        assert isinstance(value, float) and 0.0 <= value <= 1.0, (pred, value)
        assert m(ex, pred) == value  # the same score twice


def check_gold_scores_one_and_a_wrong_label_less(cls, base_dir) -> None:
    _, m = build(cls, base_dir)
    ex = Example("train:0", {"text": "q"}, GOLD)
    assert m(ex, {"answer": GOLD}) == 1.0
    assert m(ex, {"answer": WRONG}) < 1.0


def check_text_metrics_compose(cls, base_dir) -> None:
    """A ``compares_text`` metric scores text against text, and a regex metric may score with it."""
    name = cls_name(cls)
    if not cls.compares_text:
        with pytest.raises(ConfigError, match=r"metric\.then: invalid value"):
            task_from_dict(task_dict({"name": "regex", "pattern": "(x)", "then": name}))
        return
    _, m = build(cls, base_dir)
    assert m.score_text(GOLD, GOLD) == 1.0 and 0.0 <= m.score_text(GOLD, WRONG) < 1.0
    task = task_from_dict(task_dict({"name": "regex", "pattern": r"answer is (\S+?)\.", "then": name}), base_dir=base_dir)
    regex = build_metric(task)
    ex = Example("train:0", {"text": "q"}, GOLD)
    assert regex(ex, {"answer": f"so the answer is {GOLD}."}) == 1.0 and regex(ex, {"answer": "no idea"}) < 1.0


def check_spec_needs_are_enforced(cls, base_dir) -> None:
    name = cls_name(cls)
    if cls.needs_pattern:
        with pytest.raises(ConfigError, match=rf"metric `{name}` needs `pattern`"):
            task_from_dict(task_dict({k: v for k, v in spec_for(cls).items() if k != "pattern"}))
    if cls.needs_function:
        with pytest.raises(ConfigError, match=rf"metric `{name}` needs `function"):
            task_from_dict(task_dict({k: v for k, v in spec_for(cls).items() if k != "function"}))
    if cls.needs_lm:
        for missing in ("lm", "rubric"):
            with pytest.raises(ConfigError, match=rf"metric `{name}` needs `lm: PROFILE`"):
                task_from_dict(task_dict({k: v for k, v in spec_for(cls).items() if k != missing}))
    else:
        with pytest.raises(ConfigError, match="belong to the judge metric"):
            task_from_dict(task_dict({**spec_for(cls), "rubric": "x"}))
    if cls.needs_json:
        with pytest.raises(MetricError, match="output.format"):
            build_metric(task_from_dict(task_dict(spec_for(cls)), base_dir=base_dir))
    if cls.needs_labels:
        with pytest.raises(MetricError, match="needs a fixed label set"):
            build_metric(task_from_dict(task_dict(spec_for(cls), labels=False), base_dir=base_dir))
    else:
        build_metric(task_from_dict(task_dict(spec_for(cls), labels=False, json_answer=cls.needs_json),
                                    base_dir=base_dir))


CHECKS = [check_capabilities, check_scores_are_floats_in_the_unit_interval, check_gold_scores_one_and_a_wrong_label_less,
          check_text_metrics_compose, check_spec_needs_are_enforced]


@pytest.mark.parametrize("name", METRICS.names())
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__[len("check_"):])
def test_contract(name, check, metric_file):
    check(METRICS.get(name), metric_file)


def test_schema_then_takes_exactly_the_text_metrics():
    text = [n for n in METRICS.names() if METRICS.get(n).compares_text]
    assert text == ["exact_match", "label_accuracy", "contains", "token_f1", "numeric"]


# ------------------------------------------------------------------------------ adding a metric

class PrefixMatch(TextMetric):
    """A metric in one class: the prediction starts with the gold answer (normalised)."""

    def score_text(self, gold: str, pred: str) -> float:
        g, p = normalize(gold), normalize(pred)
        return float(bool(g) and (p == g or p.startswith(g + " ")))


@pytest.fixture
def prefix_metric():
    with METRICS.temporarily("prefix_match", PrefixMatch) as cls:
        yield cls


def test_a_new_metric_is_one_class_and_its_registration(prefix_metric, metric_file):
    for check in CHECKS:
        check(prefix_metric, metric_file)
    task = task_from_dict(task_dict("prefix_match"), base_dir=ROOT)
    assert build_metric(task).name == "prefix_match"
    task = task_from_dict(task_dict({"name": "regex", "pattern": "(.*)", "then": "prefix_match"}), base_dir=ROOT)
    assert build_metric(task).name == "regex>prefix_match"


def test_an_unregistered_metric_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"metric\.name: invalid value 'prefix_match' \(fix: use one of "
                                          r"'exact_match', 'label_accuracy', 'contains', 'token_f1', 'numeric', "
                                          r"'regex', 'json_fields', 'judge' or 'custom'\)"):
        task_from_dict(task_dict("prefix_match"))


def test_a_broken_metric_fails_the_checks(prefix_metric, metric_file):
    class Unbounded(PrefixMatch):
        def score_text(self, gold, pred):
            return float(len(pred))

    class Inverted(PrefixMatch):
        def score_text(self, gold, pred):
            return 1.0 - super().score_text(gold, pred)

    METRICS.unregister("prefix_match")
    for broken, check in ((Unbounded, check_scores_are_floats_in_the_unit_interval),
                          (Inverted, check_gold_scores_one_and_a_wrong_label_less)):
        METRICS.register("prefix_match", broken)
        try:
            with pytest.raises(AssertionError):
                check(broken, metric_file)
        finally:
            METRICS.unregister("prefix_match")
    METRICS.register("prefix_match", PrefixMatch)
