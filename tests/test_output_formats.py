"""Outputs read by their ``format``: ``line`` (the first line), ``text`` (all of it) and ``json`` (the first JSON
value, checked against ``output.schema``): reading, the schema and data checks, the ``json_fields`` metric, a
search on a scripted LM and an export read back by the plain client. The same on the real models is in
``test_output_formats_real_model.py``."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, run_cli
from fakes import ScriptedBackend
from optimizer.adapters import CompletionAdapter, parse_response
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.errors import ConfigError, DataError
from optimizer.metrics import build_metric
from optimizer.plain_client import first_json, parse, read_value, unframed_fields
from optimizer.program import make_signature
from optimizer.task import task_from_dict

SCHEMA = {"type": "object", "properties": {"type": {"enum": ["human", "location", "number"]},
                                           "subtype": {"type": "string"}},
          "required": ["type", "subtype"], "additionalProperties": False}
QUESTIONS = [("Who wrote Hamlet ?", "human", "individual"), ("Where is Lima ?", "location", "city"),
             ("How many legs has a spider ?", "number", "count"), ("Who founded Rome ?", "human", "individual"),
             ("What is the capital of Peru ?", "location", "city"), ("When did the war end ?", "number", "date"),
             ("Which group sang Help ?", "human", "group"), ("How far is the moon ?", "number", "distance")]
ROWS = [(f"{q} ({i})", t, s) for i in range(3) for q, t, s in QUESTIONS]  # 24 distinct questions


def json_task(tmp_path, *, rows=None, output=None, metric="json_fields", **optimizer):
    rows = rows if rows is not None else [{"question": q, "answer": {"type": t, "subtype": s}} for q, t, s in ROWS]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"task": "qa_json", "dataset": {"format": "jsonl", "files": {"train": "qa.jsonl"}},
            "splits": {"train": {"from": "train", "limit": 8}, "validation": {"from": "train", "limit": 8},
                       "test": {"from": "train", "limit": 8}},
            "inputs": [{"name": "question", "prefix": "Question"}],
            "output": output or {"name": "answer", "prefix": "Answer", "format": "json", "schema": SCHEMA},
            "instruction": "Give the answer type as JSON.", "metric": metric, "max_tokens": 24,
            "optimizer": {"trials": 4, "max_demos": 2, "demo_sets": 2, "instructions": 1, **optimizer}}
    return task_from_dict(data, base_dir=tmp_path)


# ------------------------------------------------------------------------------------------ reading

def test_values_are_read_by_format():
    text = ' {"type": "human",\n  "subtype": "individual"}\n\nQuestion: next'
    assert read_value(text, "line") == '{"type": "human",'
    assert read_value(text, "text") == text.strip()
    assert read_value(text, "json") == '{"type": "human", "subtype": "individual"}'
    assert first_json("no object here { but [1, 2] is") == "[1, 2]"
    assert first_json("none {at all") is None
    assert read_value("plain words", "json") == "plain words"  # kept, so the failure shows what came back


def test_plain_client_rules_follow_the_format():
    fields = [{"name": "answer", "prefix": "Answer:", "format": "json"}]
    assert parse('{"a": 1}\nmore', {"rule": "json-object", "fields": fields}) == {"answer": '{"a": 1}'}
    assert parse(" two\nlines \n", {"rule": "whole-text", "fields": fields}) == {"answer": "two\nlines"}
    cot = [{"name": "reasoning", "prefix": "Reasoning:"}, {"name": "answer", "prefix": "Answer:", "format": "text"}]
    got = parse("think\nAnswer: line one\nline two", {"rule": "prefixed-fields", "fields": cot})
    assert got == {"reasoning": "think", "answer": "line one\nline two"}
    # a chat reply: the section's JSON, or an unframed reply in a fenced block
    chat = parse('[[ ## answer ## ]]\n{"a": [1,2]}\n\n[[ ## completed ## ]]', {"rule": "chat-fields", "fields": fields})
    assert chat == {"answer": '{"a": [1, 2]}'}
    assert unframed_fields(["answer"], '```json\n{"a": 1,\n "b": 2}\n```', {"answer": "json"}) == {"answer": '{"a": 1, "b": 2}'}
    assert unframed_fields(["answer"], "first\nsecond") == {"answer": "first"}


def test_completion_adapter_keeps_a_multi_line_answer(tmp_path):
    task = json_task(tmp_path, output={"name": "answer", "prefix": "Answer", "format": "text"}, metric="token_f1")
    sig = make_signature(task)
    adapter = CompletionAdapter()
    assert adapter.stop(sig) == ("\nQuestion:",)  # blank lines may belong to the answer
    values, ok = parse_response(adapter, sig, " first line\n\nsecond paragraph\n")
    assert ok and values == {"answer": "first line\n\nsecond paragraph"}
    # a demo with a multi-line answer is rendered whole
    prompt = adapter.render(sig, [{"question": "q", "answer": "a\nb"}], {"question": "x"})
    assert "Answer: a\nb\n\nQuestion: x\nAnswer:" in prompt


def test_a_json_answer_that_fails_the_schema_is_a_parse_failure(tmp_path):
    sig = make_signature(json_task(tmp_path))
    adapter = CompletionAdapter()
    values, ok = parse_response(adapter, sig, ' {"type": "human", "subtype": "individual"} trailing')
    assert ok and values["answer"] == '{"type": "human", "subtype": "individual"}'
    for bad in (' {"type": "animal", "subtype": "dog"}', ' {"type": "human"}', " human, individual", ""):
        assert parse_response(adapter, sig, bad)[1] is False, bad
    assert ("A JSON object with keys type (one of: human, location, number), subtype."
            in sig.fields["answer"].json_schema_extra["desc"])


# -------------------------------------------------------------------------------- schema and data

@pytest.mark.parametrize("output, message", [
    ({"name": "answer", "schema": {"type": "object"}}, "`schema` needs `format: json`"),
    ({"name": "answer", "format": "json", "schema": {"type": "thing"}}, "not a valid JSON Schema"),
    ({"name": "answer", "format": "text", "labels": {"0": "no", "1": "yes"}}, "`labels` needs a one-line answer"),
    ({"name": "answer", "format": "yaml"}, "output.format"),
])
def test_bad_output_settings_are_one_clear_error(tmp_path, output, message):
    with pytest.raises(ConfigError, match=message):
        json_task(tmp_path, output=output)


def test_gold_answers_are_read_as_json_and_checked(tmp_path):
    task = json_task(tmp_path)
    s = make_splits(task)
    gold = {q: json.dumps({"type": t, "subtype": st}) for q, t, st in ROWS}  # written compactly
    assert all(e.output == gold[e.inputs["question"]] for e in s.train + s.validation + s.test)
    rows = [{"question": q, "answer": json.dumps({"type": t, "subtype": s})} for q, t, s in ROWS]
    assert make_splits(json_task(tmp_path, rows=rows)).train[0].output == s.train[0].output  # JSON text cells too
    rows[5]["answer"] = json.dumps({"type": "animal", "subtype": "dog"})
    with pytest.raises(DataError, match=r"row 5 of split 'train'.*fails the schema at type") as exc:
        make_splits(json_task(tmp_path, rows=rows))
    assert exc.value.field == "output.schema"
    rows[5]["answer"] = "not json"
    with pytest.raises(DataError, match=r"row 5 .*not JSON"):
        make_splits(json_task(tmp_path, rows=rows))


def test_bad_gold_json_is_one_line_and_exit_2(tmp_path):
    json_task(tmp_path)  # writes qa.jsonl
    rows = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    rows[3]["answer"] = {"type": "plant"}
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"task": "qa_json", "dataset": {"format": "jsonl", "files": {"train": "qa.jsonl"}},
            "splits": {"train": {"from": "train", "limit": 8}, "validation": {"from": "train", "limit": 8},
                       "test": {"from": "train", "limit": 8}},
            "inputs": [{"name": "question"}], "output": {"name": "answer", "format": "json", "schema": SCHEMA},
            "instruction": "x", "metric": "json_fields"}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(data))
    r = run_cli("validate", str(tmp_path / "task.yaml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = (r.stderr + r.stdout).strip()
    assert len(line.splitlines()) == 1 and "output.schema" in line and "row 3" in line, line


# ------------------------------------------------------------------------------------------ metric

def test_json_fields_scores_key_by_key(tmp_path):
    from optimizer.data import Example

    task = json_task(tmp_path)
    m = build_metric(task)
    ex = Example("train:0", {"question": "q"}, json.dumps({"type": "human", "subtype": "individual"}))
    assert m.name == "json_fields>exact_match"
    assert m(ex, {"answer": '{"type": "human", "subtype": "individual"}'}) == 1.0
    assert m(ex, {"answer": '{"subtype": "Individual", "type": "human"}'}) == 1.0  # key order, case
    assert m(ex, {"answer": '{"type": "human", "subtype": "group"}'}) == 0.5
    assert m(ex, {"answer": '{"type": "animal", "subtype": "individual"}'}) == 0.0  # fails the schema
    assert m(ex, {"answer": "human individual"}) == 0.0 and m(ex, {}) == 0.0
    only = build_metric(json_task(tmp_path, metric={"name": "json_fields", "fields": ["type"], "then": "token_f1"}))
    assert only.name == "json_fields>token_f1" and only(ex, {"answer": '{"type": "human", "subtype": "x"}'}) == 1.0


# ------------------------------------------------------------------------ a run and its export

def scripted(task):
    s = make_splits(task)
    answers = {e.inputs["question"]: e.output for e in s.train + s.validation + s.test}
    # a wrong answer is not JSON: a parse failure, scored 0
    return ScriptedBackend(answers, input_prefix="Question:", output_prefix="Answer:", wrong="I am not sure",
                           labels=())


def test_a_search_on_json_answers_counts_parse_failures(tmp_path):
    task = json_task(tmp_path, selectors=["random"], scoring=["generate"], start="seed")
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=scripted(task), seed=0))
    s = res.summary
    assert s["best"]["scoring"] == "generate" and s["baselines"]["label_prior"] is None
    preds = [json.loads(line)["best"] for line in (res.run_dir / "test_predictions.jsonl").read_text().splitlines()]
    failed = [p for p in preds if p["text"].strip() == "I am not sure"]
    assert failed and all(p["score"] == 0.0 for p in failed)
    assert s["best"]["parse_failure_rate"] == pytest.approx(len(failed) / len(preds))
    ok = [p for p in preds if p not in failed]
    assert ok and all(p["score"] == 1.0 and json.loads(p["prediction"]["answer"]) for p in ok)


def test_a_json_export_is_read_back_by_the_plain_client(tmp_path):
    from optimizer.artifacts import build_artifact
    from optimizer.runread import FinishedRun

    task = json_task(tmp_path, selectors=["random"], scoring=["generate"], start="seed")
    optimize(task, RunOptions(out=tmp_path / "run", backend=scripted(task), seed=0))
    spec = build_artifact(FinishedRun.open(tmp_path / "run"), "yaml")["output_parsing"]
    assert spec["rule"] == "json-object" and spec["schema"] == SCHEMA
    assert spec["fields"] == [{"name": "answer", "prefix": "Answer:", "format": "json"}]
    assert parse('{"type": "number",\n"subtype": "count"}\n', spec) == {"answer": '{"type": "number", "subtype": "count"}'}


# ------------------------------------------------------------ several inputs, a JSON answer, an export

def test_two_inputs_and_a_json_answer_render_and_export_alike(tmp_path):
    """A task with two input fields and a JSON answer: each prompt shows both fields in order, and the yaml
    export renders (from its template and from its parts) the prompt the optimizer sent, for fixed demos
    and for per-input (kNN) demos over both fields."""
    from optimizer.artifacts import build_artifact
    from optimizer.evaluate import Evaluator
    from optimizer.metrics import build_metric
    from optimizer.plain_client import prepare
    from optimizer.runread import FinishedRun

    rows = [{"question": q, "hint": f"think of {t}s", "answer": {"type": t, "subtype": s}} for q, t, s in ROWS]
    for selectors, start in ((["random"], "seed"), (["knn"], "knn")):
        out = tmp_path / selectors[0]
        out.mkdir()
        task = json_task(out, rows=rows, selectors=selectors, scoring=["generate"], start=start, start_demos=2)
        task = task.model_copy(update={"inputs": [*task.inputs, task.inputs[0].model_copy(
            update={"name": "hint", "prefix": "Hint", "column": None})]})
        res = optimize(task, RunOptions(out=out / "run", backend=scripted(task), seed=0))
        art = build_artifact(FinishedRun.open(out / "run"), "yaml")
        assert [f["name"] for f in art["inputs"]] == ["question", "hint"]
        ev = Evaluator(task, scripted(task), build_metric(task), adapter="completion", max_tokens=task.max_tokens)
        winner = res.best
        for ex in make_splits(task).test[:4]:
            sent = ev.request(winner, ex.inputs).prompt
            assert f"Question: {ex.inputs['question']}\nHint: {ex.inputs['hint']}\nAnswer:" in sent
            got = prepare(art, ex.inputs)
            assert got["prompt"] == sent and got.get("parts_prompt", sent) == sent
        assert winner.demos  # both winners have demos: the renders above compared real demo blocks
        if selectors == ["knn"]:  # per-input demos, retrieved over both input fields
            assert winner.knn == 2 and art["retrieval"]["fields"] == ["question", "hint"]
