"""Prompt rendering and parsing: the completion adapter for base models, DSPy's chat adapter for chat models."""

import dspy

from conftest import sst2_task
from optimizer.adapters import CompletionAdapter, parse_response, render_request
from optimizer.data import Example
from optimizer.program import Candidate, build_program, demo_dicts, make_signature
from optimizer.task import task_from_dict

DEMOS = (Example("train:1", {"sentence": "a joy"}, "positive"), Example("train:2", {"sentence": "a bore"}, "negative"))


def test_completion_prompt_is_plain_fields():
    task = sst2_task()
    sig = make_signature(task, "Classify it.")
    req = render_request(CompletionAdapter(), sig, demo_dicts(task, DEMOS), {"sentence": "so good"}, max_tokens=4)
    assert req.prompt == ("Classify it.\n\nReview: a joy\nSentiment: positive\n\nReview: a bore\nSentiment: negative"
                          "\n\nReview: so good\nSentiment:")
    assert req.stop == ("\n\n", "\nReview:", "\nSentiment:") and req.max_tokens == 4


def test_completion_parse_first_line():
    task = sst2_task()
    sig = make_signature(task, "x")
    values, ok = parse_response(CompletionAdapter(), sig, " positive\nReview: more")
    assert ok and values == {"sentiment": "positive"}
    values, ok = parse_response(CompletionAdapter(), sig, "   ")
    assert not ok


def cot_task():
    return task_from_dict({
        "task": "math", "dataset": {"files": {"train": "x.jsonl"}},
        "splits": {"train": {"from": "train"}, "validation": {"from": "train"}, "test": {"from": "train"}},
        "inputs": [{"name": "question", "prefix": "Question"}], "output": {"name": "answer", "prefix": "Answer"},
        "instruction": "Solve it.", "program": "chain_of_thought", "metric": "numeric"})


def test_chain_of_thought_renders_reasoning_and_parses_answer():
    task = cot_task()
    sig = make_signature(task)
    assert list(sig.output_fields) == ["reasoning", "answer"]
    demo = Example("train:0", {"question": "1+1?"}, "2", rationale="One plus one is two.")
    adapter = CompletionAdapter()
    req = render_request(adapter, sig, demo_dicts(task, (demo,)), {"question": "2+3?"}, max_tokens=64)
    assert "Question: 1+1?\nReasoning: One plus one is two.\nAnswer: 2\n\nQuestion: 2+3?\nReasoning:" in req.prompt
    assert req.stop == ("\n\n", "\nQuestion:")
    values, ok = parse_response(adapter, sig, " Two plus three is five.\nAnswer: 5")
    assert ok and values["reasoning"] == "Two plus three is five." and values["answer"] == "5"
    values, ok = parse_response(adapter, sig, " Two plus three makes 5")  # no Answer line: fall back, flag it
    assert not ok and values["answer"] == "Two plus three makes 5"


def test_chat_adapter_renders_messages_and_parses():
    task = sst2_task()
    sig = make_signature(task, "Classify it.")
    req = render_request(dspy.ChatAdapter(), sig, demo_dicts(task, DEMOS), {"sentence": "so good"}, max_tokens=50)
    roles = [r for r, _ in req.messages]
    assert roles[0] == "system" and roles.count("assistant") == 2 and roles[-1] == "user"
    assert "Classify it." in req.messages[0][1] and "so good" in req.messages[-1][1]
    values, ok = parse_response(dspy.ChatAdapter(), sig, "[[ ## sentiment ## ]]\npositive\n\n[[ ## completed ## ]]")
    assert ok and values["sentiment"] == "positive"


def test_program_roundtrip_through_dspy_save_load(tmp_path):
    task = sst2_task()
    cand = Candidate("Be brief.", DEMOS)
    prog = build_program(task, cand)
    prog.save(str(tmp_path / "p.json"))
    fresh = build_program(task)
    fresh.load(str(tmp_path / "p.json"))
    assert fresh.signature.instructions == "Be brief."
    assert [d["sentence"] for d in fresh.demos] == ["a joy", "a bore"]
    cot = build_program(cot_task(), Candidate("Think.", ()))
    assert isinstance(cot, dspy.ChainOfThought) and list(cot.predict.signature.output_fields) == ["reasoning", "answer"]
