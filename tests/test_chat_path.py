"""The chat path: requests that budget the answer past the adapter's framing, a parse fallback for plain and
JSON replies, and label readouts from chat log-probabilities (in-process through the model's own chat
template, and on ``/v1/chat/completions`` with ``logprobs``/``top_logprobs``, honouring the endpoint's top-k).

Unit tests use ``httpx.MockTransport`` under the real ``openai`` client and a tiny scripted chat backend;
the integration tests run the embedded instruct model (Qwen2.5-Coder-0.5B-Instruct) in-process and behind
``python -m llama_cpp.server`` with its own chat template (a stock chat endpoint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import dspy
import httpx
import pytest

from conftest import run_cli, sst2_task
from optimizer.adapters import CHAT_END, chat_header, parse_response, readout_request, render_request
from optimizer.errors import ConfigError
from optimizer.evaluate import Evaluator
from optimizer.lm._local import LocalBackend
from optimizer.lm._openai import OpenAIBackend
from optimizer.lm.base import LMBackend, LMRequest, LMResponse
from optimizer.lm.profiles import LMProfile, load_profile
from optimizer.metrics import build_metric
from optimizer.plain_client import answer_top
from optimizer.program import Candidate, demo_dicts, make_signature

HEADER = "[[ ## sentiment ## ]]"

# ------------------------------------------------------------------------------------------------- unit


@pytest.mark.parametrize("tokens, want", [
    (["[[", " ##", " sentiment", " ##", " ]]\n", "positive", "\n\n"], "positive"),  # the framed reply
    (["[[ ## sentiment ## ]]", " negative"], " negative"),  # the answer on the header's line
    (["Positive"], "Positive"),  # a plain reply: its first token
    (["\n", " Negative", "."], " Negative"),
    (["[[", " negative", " ]]"], None),  # a mangled header: no readout (scored wrong, never a guess)
    (["[[", " ##", " reasoning", " ##", " ]]\n", "it is good"], None),  # another field's header
])
def test_the_answer_is_read_after_the_header_or_from_a_plain_reply(tokens, want):
    positions = [(t, {t: -0.5, "other": -2.0}) for t in tokens]
    top = answer_top(positions, HEADER + "\n")
    assert (top == {want: -0.5, "other": -2.0}) if want else top == {}


def test_a_request_without_an_answer_prefix_keeps_its_cache_key():
    """Response caches written before chat readouts existed still hit."""
    req = LMRequest(prompt="Review: fine\nSentiment:", max_tokens=1, logprobs=20)
    old = {k: v for k, v in asdict(req).items() if k != "answer_prefix"}
    blob = json.dumps({"model": "m", **old}, sort_keys=True, ensure_ascii=False)
    assert req.cache_key("m") == hashlib.sha256(blob.encode()).hexdigest()
    framed = LMRequest(messages=(("user", "x"),), logprobs=20, answer_prefix=HEADER + "\n")
    assert framed.cache_key("m") != LMRequest(messages=(("user", "x"),), logprobs=20).cache_key("m")


def test_chat_replies_without_the_framing_are_read_plainly_or_as_json():
    sig = make_signature(sst2_task())
    chat = dspy.ChatAdapter()
    assert parse_response(chat, sig, f"{HEADER}\npositive\n\n{CHAT_END}") == ({"sentiment": "positive"}, True)
    assert parse_response(chat, sig, "Negative") == ({"sentiment": "Negative"}, True)
    assert parse_response(chat, sig, 'Sure: {"Sentiment": "positive"}') == ({"sentiment": "positive"}, True)
    assert parse_response(chat, sig, "   \n") == ({"sentiment": ""}, False)  # a failure, scored wrong


def test_a_chat_request_budgets_the_answer_past_the_framing_and_stops_at_the_end_marker():
    sig = make_signature(sst2_task())
    req = render_request(dspy.ChatAdapter(), sig, [], {"sentence": "fine"}, max_tokens=4)
    assert req.kind == "chat" and req.max_tokens > 4 + len(HEADER) // 4 and req.stop == (CHAT_END,)
    read = readout_request(req, sig, 20)
    assert read.answer_prefix == chat_header("sentiment") and read.logprobs == 20 and read.temperature == 0.0
    assert read.max_tokens > len(HEADER) // 4 and read.stop == ()


class _ChatOnly(LMBackend):
    """A chat model that answers the gold label's top-k, with or without chat log-probabilities."""

    name = "chat-only"

    def __init__(self, chat_logprobs: bool):
        super().__init__(LMProfile(name="c", backend="local", model="c"))
        self.chat_logprobs = chat_logprobs
        self.requests: list[LMRequest] = []

    @property
    def model_id(self) -> str:
        return "chat-only"

    def _generate(self, request: LMRequest) -> LMResponse:
        self.requests.append(request)
        lp = [{"positive": -0.1, "negative": -2.5}] if request.logprobs else None
        return LMResponse(text=f"{HEADER}\npositive", prompt_tokens=3, completion_tokens=1, logprobs=lp)


def test_label_readouts_on_chat_need_a_backend_with_chat_logprobs():
    task = sst2_task()
    with_lp = Evaluator(task, _ChatOnly(True), build_metric(task), adapter="chat", max_tokens=4)
    assert with_lp.scorings(["auto"]) == ["likelihood", "calibrated", "batch"]
    ex = next(e for e in __import__("optimizer.data", fromlist=["make_splits"]).make_splits(task).validation
              if e.output == "positive")
    out = with_lp.run_one(Candidate(task.instruction, scoring="likelihood"), ex)
    assert out.prediction == {"sentiment": "positive"} and out.score == 1.0
    assert with_lp.backend.requests[-1].answer_prefix == chat_header("sentiment")
    without = Evaluator(task, _ChatOnly(False), build_metric(task), adapter="chat", max_tokens=4)
    assert without.scorings(["auto"]) == ["generate"]
    with pytest.raises(ConfigError, match="scoring: \\[generate\\]"):
        without.check_scoring("likelihood")
    # rendering only (bench, export: no backend): a chat run's label-readout winner renders its request
    rendering = Evaluator(task, None, build_metric(task), adapter="chat", max_tokens=4)
    req = rendering.request(Candidate(task.instruction, scoring="likelihood"), ex.inputs)
    assert req.answer_prefix == chat_header("sentiment") and req.logprobs


def _mock_openai(profile: LMProfile, seen: list[dict]) -> OpenAIBackend:
    import openai

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        tokens = ["[[", " ##", " sentiment", " ##", " ]]\n", "negative", "\n"]
        k = body.get("top_logprobs") or 0
        content = [{"token": t, "logprob": -0.2, "bytes": None,
                    "top_logprobs": [{"token": w, "logprob": -0.2 - i, "bytes": None}
                                     for i, w in enumerate([t, "positive", "neutral", "x", "y", "z", "w"][:k])]}
                   for t in tokens]
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
            "usage": {"prompt_tokens": 9, "completion_tokens": len(tokens), "total_tokens": 9 + len(tokens)},
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "".join(tokens)},
                         "logprobs": {"content": content} if body.get("logprobs") else None}]})

    backend = OpenAIBackend(profile)
    backend._client = openai.OpenAI(base_url=profile.base_url, api_key="no-key", max_retries=0,
                                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return backend


def test_openai_chat_readout_asks_for_top_logprobs_within_the_endpoints_limit():
    seen: list[dict] = []
    profile = LMProfile(name="e", backend="openai", base_url="http://mock/v1", model="m", api="chat", top_logprobs=3,
                        max_tokens_field="max_completion_tokens")
    lm = _mock_openai(profile, seen)
    r = lm.complete(LMRequest(messages=(("user", "x"),), max_tokens=12, logprobs=20, answer_prefix=HEADER + "\n"))
    assert seen[-1]["logprobs"] is True and seen[-1]["top_logprobs"] == 3  # clamped to the profile's limit
    assert seen[-1]["max_completion_tokens"] == 12 and "max_tokens" not in seen[-1]
    assert r.logprobs == [{"negative": -0.2, "positive": -1.2, "neutral": -2.2}]
    plain = lm.complete(LMRequest(messages=(("user", "x"),), max_tokens=5))
    assert "logprobs" not in seen[-1] and plain.logprobs is None and "negative" in plain.text


# ------------------------------------------------------------------------------------------ integration


@pytest.fixture(scope="module")
def instruct_server(instruct_model_path):
    """The instruct model behind llama.cpp's server with its own chat template: a stock chat endpoint."""
    from optimizer.llamacpp_server import llama_server

    with llama_server(instruct_model_path, alias="qwen-instruct", chat_template=None, threads=2) as url:
        yield url


def _evaluator(task, backend):
    return Evaluator(task, backend, build_metric(task), adapter="chat", max_tokens=task.max_tokens)


def test_the_instruct_model_answers_and_reads_labels_in_process_and_on_a_stock_chat_endpoint(instruct_server):
    from optimizer.data import make_splits

    task = sst2_task(train=8, validation=8, test=8)
    splits = make_splits(task)
    served = OpenAIBackend(LMProfile(name="s", backend="openai", base_url=instruct_server, model="qwen-instruct",
                                     api="chat", top_logprobs=5))
    local = LocalBackend(load_profile("local-instruct"))
    try:
        examples = splits.validation[:6]
        demos = tuple(splits.train[:2])
        results = {}
        for name, backend in (("served", served), ("local", local)):
            ev = _evaluator(task, backend)
            for scoring in ("generate", "likelihood"):
                r = ev.evaluate(Candidate(task.instruction, demos, scoring=scoring), examples)
                results[name, scoring] = [ev.answer(o) for o in r.outcomes]
                assert all(o.parsed for o in r.outcomes), (name, scoring, [o.text for o in r.outcomes])
        gold = [e.output for e in examples]
        for key, answers in results.items():
            assert sum(a == g for a, g in zip(answers, gold)) >= 4, (key, answers, gold)  # it follows the task
        # the endpoint's readout (after the header it writes) and the in-process one (after the header
        # prefilled) agree on nearly every example
        agree = sum(a == b for a, b in zip(results["served", "likelihood"], results["local", "likelihood"]))
        assert agree >= 5, results
        sig = make_signature(task)
        r = served.complete(readout_request(render_request(dspy.ChatAdapter(), sig, demo_dicts(task, demos),
                                                           examples[0].inputs, max_tokens=4), sig, 20))
        assert r.logprobs and 0 < len(r.logprobs[0]) <= 5  # the endpoint's top-k limit from the profile
    finally:
        local.close()
        served.close()


@pytest.mark.integration
def test_optimize_with_local_instruct_then_an_openai_chat_export_passes_parity_on_a_stock_endpoint(tmp_path):
    """The README's path for chat models: optimize with --lm local-instruct, export openai-chat; the parity
    check serves the model with its own chat template, no custom template in the artifact."""
    # generated answers and fixed demo sets: under the engine's defaults (label readouts, kNN) this 2-trial
    # run picked the zero-shot seed prompt (0.2 on 10 test examples), which tests nothing about the chat path
    task_file = _small_sst2(tmp_path, trials=2, max_demos=2, demo_sets=2, instructions=1)
    run = tmp_path / "run"
    r = run_cli(str(task_file), "--lm", "local-instruct", "--out", str(run), "--cache-dir", str(tmp_path / "c"),
                "--quiet", timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["adapter"] == "chat" and s["best"]["parse_failure_rate"] <= 0.1
    assert s["best"]["test"] >= 0.6, s["best"]
    r = run_cli("export", str(run), "--format", "openai-chat", "--out", str(tmp_path / "chat.json"),
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = json.loads((tmp_path / "chat.json").read_text())
    assert "chat_template" not in art and art["parity"]["passed"] is True, art.get("parity")


def _small_sst2(tmp_path, **optimizer):
    """SST-2 with 12 / 8 / 10 examples and ``MECHANISM_SETTINGS`` updated by ``optimizer``, as a task file."""
    import yaml

    from conftest import MECHANISM_SETTINGS, ROOT

    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"].update(train={"from": "train", "limit": 12}, validation={"from": "dev", "limit": 8},
                          test={"from": "test", "limit": 10})
    data["optimizer"].update({**MECHANISM_SETTINGS, **optimizer})
    data["dataset"]["files"] = {k: str(ROOT / "tasks/sst2" / v) for k, v in data["dataset"]["files"].items()}
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(data))
    return task_file


@pytest.mark.integration
def test_a_local_chat_readout_winner_exports_as_its_rendered_prompt_and_passes_parity(tmp_path):
    """A local-instruct winner that reads labels at the reply the backend opened itself (the model's chat
    template, then the answer's header): openai-chat is refused (a chat endpoint writes its own reply), the
    completion export carries that rendered text and passes parity on llama.cpp's /v1/completions."""
    task_file = _small_sst2(tmp_path, trials=1, max_demos=2, demo_sets=1, instructions=1, scoring=["likelihood"],
                            start="demos")
    run = tmp_path / "run"
    r = run_cli(str(task_file), "--lm", "local-instruct", "--out", str(run), "--cache-dir", str(tmp_path / "c"),
                "--quiet", timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["adapter"] == "chat" and s["best"]["scoring"] == "likelihood", s["best"]
    r = run_cli("export", str(run), "--format", "openai-chat", "--out", str(tmp_path / "chat.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--format" in r.stderr and "export it as completion" in r.stderr
    r = run_cli("export", str(run), "--format", "completion", "--out", str(tmp_path / "c.json"), "--sample", "6",
                timeout=900)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    art = json.loads((tmp_path / "c.json").read_text())
    assert art["template"].startswith("<|im_start|>system") and art["template"].endswith("[[ ## sentiment ## ]]\n")
    assert art["parameters"]["max_tokens"] == 1 and isinstance(art["parameters"]["logprobs"], int)
    assert "answer_prefix" not in art["output_parsing"]
    p = art["parity"]
    assert p["passed"] is True and p["agreement"] == 1.0, p
    assert p["prompts_equal"] == p["n"] and p["endpoint_prompt_tokens_equal"] == p["n"], p


class _AnswersWithDemos(LMBackend):
    """A chat model that answers right only when the messages hold demos (an assistant turn), plainly."""

    name = "answers-with-demos"

    def __init__(self, gold: dict[str, str]):
        super().__init__(LMProfile(name="d", backend="local", model="d"))
        self.gold = gold

    @property
    def model_id(self) -> str:
        return "answers-with-demos"

    def _generate(self, request: LMRequest) -> LMResponse:
        roles = [r for r, _ in request.messages or ()]
        sentence = (request.messages or ())[-1][1].split("]]", 1)[-1].split("\n\n")[0].strip()
        right = self.gold.get(sentence, "positive")
        wrong = "negative" if right == "positive" else "positive"
        return LMResponse(text=f"{HEADER}\n{right if 'assistant' in roles else wrong}", prompt_tokens=3,
                          completion_tokens=1)


def test_a_chat_knn_winner_is_refused_by_every_export_format_with_the_same_fix(tmp_path):
    """kNN demos render as a completion template only (yaml's retrieval rule): a chat run's kNN winner is
    refused by every format with one fix, not sent from one format to another."""
    from optimizer.data import make_splits
    from optimizer.engine import RunOptions, optimize
    from optimizer.export import build_artifact
    from optimizer.runread import FinishedRun

    task = sst2_task(train=16, validation=8, test=8, selectors=["knn"], start="knn", trials=1, instructions=1,
                     max_demos=2)
    task.adapter = "chat"
    splits = make_splits(task)
    gold = {e.inputs["sentence"].strip(): e.output for part in (splits.train, splits.validation, splits.test)
            for e in part}
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=_AnswersWithDemos(gold), preflight=False))
    assert res.summary["adapter"] == "chat" and res.summary["best"]["knn"], res.summary["best"]
    run = FinishedRun.open(tmp_path / "run")
    for fmt in ("openai-chat", "completion", "yaml", "dspy"):
        with pytest.raises(ConfigError, match="kNN") as err:
            build_artifact(run, fmt)
        assert "without knn" in err.value.fix, (fmt, err.value.fix)
