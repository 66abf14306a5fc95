"""``optimize export``: the winner of a run as a production artifact, checked for parity.

Formats (all carry the model, the decoding parameters, how to parse the answer, the source run and
its scores; none carries a key: only the *name* of the key's environment variable, if any):

``completion``
    JSON with one text ``template`` (``{{field}}`` placeholders) for ``/v1/completions``.
``yaml``
    A production config: model, parameters, instruction, demos, fields and prefixes, the rendered
    ``template``, output parsing, source run and scores.
``dspy``
    The DSPy program JSON (``build_program(task).load(path)`` reads it) plus a
    ``prompt_optimizer`` block with field names, parameters and parsing.
``openai-chat``
    JSON with ``messages`` (``{{field}}`` placeholders) for ``/v1/chat/completions``.

**Chat messages for a run optimized on a base model.** A completion-adapter run optimized one raw
prompt; a chat endpoint does not send messages to the model as they are, it applies a chat
template first (llama.cpp's server applies the model's own, Gemma's ``<start_of_turn>user ...``),
which would make a different prompt from the one that was optimized and scored. So the
``openai-chat`` export of such a run is honest about it: the messages are the natural chat form of
the prompt (``system``: the instruction; per demo a ``user`` turn ending at the answer's prefix
and an ``assistant`` turn with the answer; a final ``user`` turn), and the artifact carries
``chat_template``, a Jinja chat template that renders exactly these messages back into the
optimized prompt, plus ``requires``: the endpoint must apply that template (llama.cpp:
``python -m llama_cpp.server --chat_format hf-tokenizer-config --hf_tokenizer_config_path F``
with ``F`` holding ``chat_template``; vLLM: ``--chat-template``). The parity check does what the
artifact says: it starts llama.cpp's server with that template and sends the messages through
``/v1/chat/completions``. Runs optimized with the chat adapter export DSPy's chat messages
unchanged and need no template.

**Parity check** (every export, and ``--verify`` on an existing file). ``plain_client.py`` (stdlib,
``openai``, ``yaml``, ``jinja2``; run with ``python -I`` in its own process, never importing this
package) renders the artifact by string replacement and sends it with the plain ``openai`` client
to an OpenAI-compatible endpoint: ``--endpoint URL``, or a ``--lm`` profile's endpoint, or, when
neither is given, the run's own endpoint for ``openai`` runs and, for ``local`` runs, a llama.cpp
server that the check starts on loopback with the run's GGUF model and stops afterwards. It runs
on a seeded sample of the run's test examples, whose optimizer answers and scores are in
``test_predictions.jsonl``. The export fails when any of these fails:

1. prompts: each rendered prompt (for chat, the template-rendered text or the messages) equals
   the optimizer's prompt for the same example, byte for byte; and, for runs on a local GGUF model,
   the prompt token count the endpoint reports equals that of the optimizer's prompt (so the
   endpoint, chat template included, sent the model exactly that text);
2. score interval: |export mean − optimizer mean| on the sample is at most the half-width of the
   optimizer's 95% interval: the larger of the test interval the run reported and the bootstrap
   interval on the sample, and at least one example (1/n);
3. paired test: the per-example difference is not significant at 5% (exact McNemar for 0/1
   scores, paired bootstrap otherwise);
4. agreement: at least ``min_agreement`` (default 0.9) of the parsed answers equal the
   optimizer's (skipped for sampled decoding).

llama.cpp's server applies ``repeat_penalty`` 1.1 by default; the embedded backend decodes with
1.0, so exports of ``local`` runs carry ``extra_body: {repeat_penalty: 1.0}`` (a llama.cpp/vLLM
field, sent through the ``openai`` client's ``extra_body``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from . import __version__
from .adapters import field_prefix
from .data import Example
from .errors import ConfigError, LMConnectionError, LMError, OptimizerError
from .evaluate import Evaluator
from .program import Candidate, demo_dicts
from .runread import FinishedRun, predictor_state
from .scoring import TOP_K
from .stats import bootstrap_ci, mcnemar, paired_bootstrap

FORMATS = ("openai-chat", "completion", "yaml", "dspy")
CLIENT = Path(__file__).with_name("plain_client.py")

#: renders [system?, (user, assistant)*, user] back into ``instruction\n\nblock\n\n...block``:
#: an assistant turn continues the previous user turn after one space; other turns are separated
#: by a blank line; an empty assistant turn (the generation prompt) adds nothing.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
                 "{% if m['content'] %}{{ ' ' + m['content'] }}{% endif %}{% else %}"
                 "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}{{ m['content'] }}{% endif %}{% endfor %}")

CHAT_REQUIRES = ("an endpoint that applies `chat_template` to these messages (the prompt was optimized as raw "
                 "text on a base model): llama.cpp `python -m llama_cpp.server --chat_format hf-tokenizer-config "
                 "--hf_tokenizer_config_path F` (F = {\"chat_template\": <chat_template>, \"bos_token\": \"<bos>\", "
                 "\"eos_token\": \"<eos>\"}), vLLM `--chat-template`; the model's own chat template gives a "
                 "different prompt, not the one that was scored")


class ParityError(OptimizerError):
    """The exported artifact does not reproduce the optimizer's prompts or scores."""


# ---------------------------------------------------------------------------- building

def _evaluator(run: FinishedRun) -> Evaluator:
    from .bench import renderer

    ev = renderer(run.task, run.profile)
    if ev.adapter_kind != run.adapter:
        raise ConfigError(f"run used adapter {run.adapter!r}, the task now resolves to {ev.adapter_kind!r}",
                          file=str(run.path / "task.resolved.yaml"), field="adapter",
                          fix="the run directory was edited; rerun `optimize`")
    return ev


def _placeholders(run: FinishedRun) -> dict[str, str]:
    return {n: "{{" + n + "}}" for n in run.task.input_names}


def completion_parts(ev: Evaluator, cand: Candidate, inputs: dict[str, str]) -> tuple[str, list[str], str]:
    """(instruction, demo blocks, input block) of a completion prompt, all rendered by the adapter."""
    marker = "\x00INSTRUCTION\x00"

    def after_marker(c: Candidate, values: dict[str, str]) -> str:
        text = ev.prompt_text(c, values)
        return text[text.index(marker) + len(marker) + 2:]

    final = after_marker(Candidate(marker), inputs)
    blocks = []
    for d in cand.demos:
        both = after_marker(Candidate(marker, (d,)), inputs)
        blocks.append(both[: len(both) - len(final) - 2])
    instruction = cand.instruction.strip()
    full = ev.prompt_text(cand, inputs)
    if "\n\n".join(([instruction] if instruction else []) + blocks + [final]) != full:
        raise RuntimeError("completion prompt does not split into instruction, demos and input block")
    return instruction, blocks, final


def render_chat(messages: list[dict[str, str]]) -> str:
    """CHAT_TEMPLATE in Python (without BOS)."""
    out = ""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            out += (" " + m["content"]) if m["content"] else ""
        else:
            out += ("\n\n" if i else "") + m["content"]
    return out


def chat_messages(ev: Evaluator, cand: Candidate, inputs: dict[str, str]) -> list[dict[str, str]]:
    """The natural chat form of a completion prompt; ``render_chat`` gives the prompt back exactly."""
    if ev.adapter_kind != "completion":
        req = ev.request(cand, inputs)
        return [{"role": r, "content": c} for r, c in req.messages or ()]
    instruction, blocks, final = completion_parts(ev, cand, inputs)
    marker = "\x00INSTRUCTION\x00"
    msgs: list[dict[str, str]] = [{"role": "system", "content": instruction}] if instruction else []
    for d, block in zip(cand.demos, blocks):
        question = ev.prompt_text(Candidate(marker), d.inputs)
        question = question[question.index(marker) + len(marker) + 2:]
        if block.startswith(question + " "):
            msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": block[len(question) + 1:]}]
        else:  # a demo without its first output field: one user turn
            msgs.append({"role": "user", "content": block})
    msgs.append({"role": "user", "content": final})
    if render_chat(msgs) != ev.prompt_text(cand, inputs):
        raise RuntimeError("chat messages do not render back to the optimized prompt")
    return msgs


def _fields(ev: Evaluator, run: FinishedRun) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    sig = ev.signature(Candidate(run.task.instruction))
    ins = [{"name": n, "prefix": field_prefix(sig, n)} for n in sig.input_fields]
    outs = [{"name": n, "prefix": field_prefix(sig, n)} for n in sig.output_fields]
    return ins, outs


def _parsing(ev: Evaluator, run: FinishedRun) -> dict[str, Any]:
    _, outs = _fields(ev, run)
    best = run.summary.get("best") or {}
    if (best.get("scoring") or "generate") != "generate":
        offsets = best.get("calibration") if best.get("scoring") in ("calibrated", "batch") else None
        spec = {"rule": "label-likelihood",
                "description": "request 1 token with logprobs; each label scores the best top-k token that starts "
                               "it, minus its calibration offset; the answer is the best label",
                "fields": outs, "answer_field": run.task.output.name, "labels": run.task.label_set,
                "top_logprobs": TOP_K, "calibration": offsets, "metric": run.summary.get("metric")}
        if offsets is not None:  # where the offsets come from: one content-free input, or the validation inputs
            spec["calibration_source"] = "validation-batch" if best.get("scoring") == "batch" else "content-free"
        return spec
    if ev.adapter_kind == "chat":
        rule, text = "chat-fields", "the text after each `[[ ## name ## ]]` marker, stripped"
    elif len(outs) == 1:
        rule, text = "first-line", "the first non-empty line of the answer, stripped"
    else:
        rule, text = "prefixed-fields", ("split the answer at each later field's prefix; the last field is the "
                                         "first non-empty line after its prefix")
    spec: dict[str, Any] = {"rule": rule, "description": text, "fields": outs, "answer_field": run.task.output.name}
    if run.task.label_set:
        spec["labels"] = run.task.label_set
    spec["metric"] = run.summary.get("metric")
    return spec


def _model_block(run: FinishedRun, ev: Evaluator) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": ev.max_tokens, "temperature": ev.temperature}
    if ((run.summary.get("best") or {}).get("scoring") or "generate") != "generate":
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_K}
    elif ev.adapter_kind == "completion":
        sig = ev.signature(Candidate(run.task.instruction))
        params["stop"] = list(ev.adapter.stop(sig))[:4]  # type: ignore[attr-defined]
    extra = {"repeat_penalty": 1.0} if run.profile.backend == "local" else {}
    block: dict[str, Any] = {"model": run.profile.model, "parameters": params}
    if extra:
        block["extra_body"] = extra
    if run.profile.backend == "openai":
        block["endpoint"] = {"base_url": run.profile.base_url, "api": run.profile.api,
                             "api_key_env": run.profile.api_key_env}
    return block


def _source(run: FinishedRun) -> dict[str, Any]:
    s = run.summary
    best, base = s["best"], s["baseline"]
    return {
        "run_dir": str(run.path.resolve()), "task": s.get("task"), "task_version": s.get("task_version"),
        "optimizer_version": s.get("optimizer_version"), "exported_by": __version__, "seed": s.get("seed"),
        "lm": {k: v for k, v in run.profile.public_dict().items() if k in ("name", "backend", "model", "base_url",
                                                                          "api", "temperature")},
        "adapter": run.adapter, "trial": best.get("trial"), "instruction_origin": best.get("instruction_origin"),
        "demo_selector": best.get("demo_selector"), "demo_ids": best.get("demo_ids"),
        "scores": {"metric": s.get("metric"), "splits": s.get("splits"), "val": best.get("val"),
                   "test": best.get("test"), "test_ci": best.get("test_ci"), "baseline_test": base.get("test"),
                   "baseline_test_ci": base.get("test_ci"), "improvement": s.get("improvement")},
    }


RENDER_RULES = {"rule": "completion-v1", "placeholder": "{{name}}", "values": "surrounding whitespace stripped",
                "reference": "optimizer/plain_client.py"}


def build_artifact(run: FinishedRun, fmt: str) -> dict[str, Any]:
    """The artifact of format ``fmt`` for the run's winner (no parity block yet)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", field="--format", fix=f"use one of {', '.join(FORMATS)}")
    ev = _evaluator(run)
    cand = run.candidate("best")
    ph = _placeholders(run)
    ins, outs = _fields(ev, run)
    common = {**_model_block(run, ev), "output_parsing": _parsing(ev, run)}
    if cand.knn and fmt != "yaml":
        raise ConfigError(f"this run's winner gives each input its {cand.knn} most similar demos (kNN), which a "
                          f"fixed {fmt} template cannot express", field="--format",
                          fix="export it as yaml (it carries the demo pool and the retrieval rule)")
    if fmt == "openai-chat" and cand.scoring != "generate":
        raise ConfigError(f"this run's winner reads the answer from label log-probabilities (scoring "
                          f"{cand.scoring!r}), which a chat endpoint does not expose",
                          field="--format", fix="export it as completion, yaml or dspy")
    if fmt == "openai-chat":
        art: dict[str, Any] = {"format": "openai-chat", "api": "chat", "inputs": run.task.input_names, **common,
                               "messages": chat_messages(ev, cand, ph)}
        if ev.adapter_kind == "completion":
            art["chat_template"] = CHAT_TEMPLATE
            art["requires"] = CHAT_REQUIRES
        art["source"] = _source(run)
        return art
    if ev.adapter_kind != "completion":
        raise ConfigError(f"the {fmt} export needs a run optimized with the completion adapter; this run used "
                          f"{ev.adapter_kind!r}", field="--format", fix="export it as openai-chat")
    template = ev.prompt_text(cand, ph)
    if fmt == "completion":
        return {"format": "completion", "api": "completions", "inputs": run.task.input_names, **common,
                "template": template, "render": RENDER_RULES, "source": _source(run)}
    if fmt == "yaml" and cand.knn:
        return {"format": "yaml", "name": f"{run.task.task}-winner", "api": "completions", **common,
                "inputs": ins, "outputs": outs, "instruction": cand.instruction, "demos": [],
                "retrieval": {"method": "tfidf-knn", "k": cand.knn, "fields": run.task.input_names,
                              "reference": "optimizer/plain_client.py: KnnIndex"},
                "demo_pool": demo_dicts(run.task, cand.demos), "render": RENDER_RULES, "source": _source(run)}
    if fmt == "yaml":
        return {"format": "yaml", "name": f"{run.task.task}-winner", "api": "completions", **common,
                "inputs": ins, "outputs": outs, "instruction": cand.instruction,
                "demos": demo_dicts(run.task, cand.demos), "template": template, "render": RENDER_RULES,
                "source": _source(run)}
    # dspy: the saved program, plus what a plain client needs
    program = json.loads(json.dumps(run.program_state))
    state = predictor_state(program)
    if state.get("signature", {}).get("instructions") != cand.instruction:
        raise ConfigError("best_program.json and summary.json disagree on the instruction",
                          file=str(run.path / "best_program.json"), field="signature.instructions",
                          fix="the run directory was edited; rerun `optimize`")
    program["prompt_optimizer"] = {"format": "dspy", "api": "completions", "inputs": [f["name"] for f in ins],
                                   "outputs": [f["name"] for f in outs], **common, "render": RENDER_RULES,
                                   "load": "optimizer.program.build_program(task).load(path)",
                                   "source": _source(run)}
    return program


def _block_style(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data and data.strip():
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _block_style)


def serialize(art: dict[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        text = yaml.dump(art, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100000)
        if yaml.safe_load(text) != art:  # block style cannot hold some strings (trailing spaces): plain dump
            text = yaml.safe_dump(art, sort_keys=False, allow_unicode=True, width=100000)
        return text
    return json.dumps(art, indent=2, ensure_ascii=False) + "\n"


def read_artifact(path: str | Path) -> tuple[dict[str, Any], str]:
    """(artifact, format) of an exported file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("export file not found", file=str(p), fix="check the path")
    try:
        text = p.read_text(encoding="utf-8")
        doc = yaml.safe_load(text) if p.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the export: {str(exc).splitlines()[0][:120]}", file=str(p),
                          fix="pass a file written by `optimize export`") from None
    if isinstance(doc, dict) and isinstance(doc.get("prompt_optimizer"), dict):
        return doc, "dspy"
    if isinstance(doc, dict) and doc.get("format") in FORMATS:
        return doc, str(doc["format"])
    raise ConfigError("not an export of `optimize export`", file=str(p), field="format",
                      fix="pass a file written by `optimize export`")


def artifact_template(doc: dict[str, Any], where: str) -> str:
    """The completion prompt template an export renders (for reading exports back as candidates)."""
    if doc.get("format") in ("completion", "yaml"):
        return str(doc["template"])
    if doc.get("format") == "openai-chat":
        if not doc.get("chat_template"):
            raise ConfigError("an openai-chat export of a chat-adapter run has no completion template", file=where,
                              field="messages", fix="bench the run directory instead")
        if doc["chat_template"] != CHAT_TEMPLATE:
            raise ConfigError("the export's chat_template was changed", file=where, field="chat_template",
                              fix="bench the run directory instead")
        return render_chat(doc["messages"])
    raise ConfigError("no template in this export", file=where, fix="bench the run directory instead")


# ---------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(model_path: str | Path, *, alias: str, n_ctx: int = 4096, chat_template: str | None = CHAT_TEMPLATE,
                 threads: int | None = None, startup_s: float = 180) -> Iterator[str]:
    """A llama.cpp OpenAI-compatible server on loopback for the duration of the block; yields its base URL."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="po-parity-server-"))
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1", "--port",
           str(port), "--n_ctx", str(n_ctx), "--model_alias", alias,
           "--n_threads", str(threads or max(1, min(os.cpu_count() or 1, 8)))]
    if chat_template is not None:
        cfg = tmp / "tokenizer_config.json"
        cfg.write_text(json.dumps({"chat_template": chat_template, "bos_token": "<bos>", "eos_token": "<eos>"}))
        cmd += ["--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(cfg)]
    log = tmp / "server.log"
    fh = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + startup_s
        while True:
            if proc.poll() is not None:
                tail = " ".join(log.read_text(errors="replace").split())[-200:]
                raise LMConnectionError(f"llama.cpp server exited during startup: {tail}", field="--endpoint",
                                        fix="check the model file, or pass --endpoint URL of a running server")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except Exception:
                if time.time() > deadline:
                    raise LMConnectionError(f"llama.cpp server did not answer within {startup_s:.0f} s",
                                            field="--endpoint", fix="pass --endpoint URL of a running server") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        fh.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


# ---------------------------------------------------------------------------- parity

@dataclass
class ParityReport:
    format: str
    n: int
    endpoint: str
    model: str
    optimizer_mean: float
    optimizer_ci: list[float]
    export_mean: float
    diff: float
    allowance: float
    diff_ci: list[float]
    p_value: float
    p_test: str
    prompts_equal: int
    agreement: float | None
    identical_text: int
    #: prompts whose token count, as the endpoint reported it, equals the optimizer's prompt's (local models)
    endpoint_prompt_tokens_equal: int | None
    min_agreement: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    first_prompt_difference: str | None = None
    rule: str = ("fail if any prompt (or, for local models, the prompt token count the endpoint reports) differs; or |export - optimizer| on the sample > the allowance: half-width of "
                 "the optimizer's 95% interval (the larger of the run's reported test interval and the bootstrap "
                 "interval on the sample; at least 1/n); or the paired test gives p < 0.05; or agreement < "
                 "min_agreement")
    wall_seconds: float = 0.0
    client_optimizer_modules: list[str] = field(default_factory=list)
    latency_s_per_call: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("optimizer_mean", "export_mean", "diff", "allowance", "p_value"):
            d[k] = round(d[k], 6)
        d["optimizer_ci"] = [round(x, 6) for x in d["optimizer_ci"]]
        d["diff_ci"] = [round(x, 6) for x in d["diff_ci"]]
        return d

    def line(self) -> str:
        ag = "n/a" if self.agreement is None else f"{self.agreement:.3f}"
        tok = "" if self.endpoint_prompt_tokens_equal is None else (
            f" · endpoint token counts equal {self.endpoint_prompt_tokens_equal}/{self.n}")
        return (f"parity {self.format}: {'PASS' if self.passed else 'FAIL'} on {self.n} test examples · prompts "
                f"equal {self.prompts_equal}/{self.n}{tok} · export {self.export_mean:.3f} vs optimizer "
                f"{self.optimizer_mean:.3f} (|Δ| {abs(self.diff):.3f}, allowed {self.allowance:.3f}) · {self.p_test} "
                f"p={self.p_value:.3g} · agreement {ag} · identical answers {self.identical_text}/{self.n}")


def _first_difference(a: str, b: str) -> str:
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: {x[:60]!r} vs optimizer {y[:60]!r}"
    return f"line {min(len(la), len(lb)) + 1}: lengths differ ({len(la)} vs {len(lb)} lines)"


def _token_counter(run: FinishedRun):
    """Counts a completion prompt's tokens as llama.cpp does (BOS + text, special tokens parsed), or None.

    Only for runs on a local GGUF model, whose tokenizer is at hand (vocabulary only, no weights)."""
    if run.profile.backend != "local":
        return None
    try:
        from llama_cpp import Llama

        from .lm._local import _silence_llama_logs, embedded_model_path

        _silence_llama_logs()
        vocab = Llama(model_path=str(run.profile.model_path or embedded_model_path()), vocab_only=True,
                      verbose=False)
    except Exception:
        return None
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def _endpoint_profile(run: FinishedRun, lm: str | None):
    from .engine import resolve_lm

    prof = resolve_lm(run.task, lm)
    if prof.backend != "openai" or not prof.base_url:
        raise ConfigError(f"profile {prof.name!r} is not an OpenAI-compatible endpoint", field="--lm",
                          fix="give a profile with backend: openai and base_url, or --endpoint URL")
    return prof


def check_parity(run: FinishedRun, artifact_path: str | Path, fmt: str, *, endpoint: str | None = None,
                 model: str | None = None, lm: str | None = None, sample: int = 50, seed: int = 0,
                 min_agreement: float = 0.9) -> ParityReport:
    """Render and send the artifact with the plain client; compare with the optimizer's test answers."""
    t0 = time.perf_counter()
    if sample < 1:
        raise ConfigError("--sample must be positive", field="--sample", fix="pass --sample 1 or more")
    art, fmt = read_artifact(artifact_path)
    meta = art["prompt_optimizer"] if "prompt_optimizer" in art else art
    ev = _evaluator(run)
    cand = run.candidate("best")
    preds = run.test_predictions()
    rng = random.Random(f"parity:{seed}")
    chosen = sorted(rng.sample(range(len(preds)), min(sample, len(preds))))
    items = [preds[i] for i in chosen]
    examples = [Example(p["id"], {k: str(v) for k, v in p["inputs"].items()}, str(p["expected"])) for p in items]

    key_env = None
    if endpoint:
        base_url, model_name, where = endpoint, model or meta.get("model") or run.profile.model, endpoint
    elif lm:
        prof = _endpoint_profile(run, lm)
        base_url, model_name, key_env, where = prof.base_url, model or prof.model, prof.api_key_env, prof.base_url
    elif run.profile.backend == "openai":
        base_url, model_name = run.profile.base_url, model or run.profile.model
        key_env, where = run.profile.api_key_env, run.profile.base_url
    else:
        base_url = None
        model_name = model or meta.get("model") or run.profile.model
        where = "llama.cpp server on loopback, started for this check"
    if key_env and not os.environ.get(key_env):
        raise ConfigError(f"environment variable {key_env} is not set", field="api_key_env",
                          fix=f"export {key_env}=<your key>")

    with tempfile.TemporaryDirectory(prefix="po-parity-") as tmpd:
        inputs = Path(tmpd) / "inputs.jsonl"
        inputs.write_text("".join(json.dumps({"id": e.id, "inputs": e.inputs}, ensure_ascii=False) + "\n"
                                  for e in examples), encoding="utf-8")
        out = Path(tmpd) / "out.jsonl"

        def call(url: str) -> None:
            cmd = [sys.executable, "-I", str(CLIENT), str(artifact_path), str(inputs), str(out), "--base-url", url,
                   "--model", str(model_name)]
            if key_env:
                cmd += ["--api-key-env", key_env]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + 30 * len(examples),
                                   stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise LMError("the parity client timed out", field="--endpoint", fix="check the endpoint") from None
            if r.returncode != 0:
                msg = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
                raise LMError(msg, file=str(artifact_path), field="parity",
                              fix="check the endpoint, and that the artifact is an unedited `optimize export` file")

        if base_url is None:
            from .lm._local import embedded_model_path

            model_file = run.profile.model_path or embedded_model_path()
            template = meta.get("chat_template") if fmt == "openai-chat" and meta.get("chat_template") else CHAT_TEMPLATE
            with llama_server(model_file, alias=str(model_name), n_ctx=run.profile.n_ctx,
                              chat_template=template) as url:
                call(url)
        else:
            call(base_url)
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]

    client_meta = rows[-1].get("_client", {}) if rows else {}
    rows = [r for r in rows if "_client" not in r]
    if [r["id"] for r in rows] != [e.id for e in examples]:
        raise LMError("the parity client answered other examples than it was given", field="parity",
                      fix="report this as a bug")

    out_name = run.task.output.name
    a = [float(p["best"]["score"]) for p in items]
    b = [float(ev.metric(e, r["parsed"])) for e, r in zip(examples, rows)]
    prompts_equal = 0
    first_diff = None
    count = _token_counter(run)
    token_checked = tokens_equal = 0
    first_token_diff = None
    for e, r in zip(examples, rows):
        req = ev.request(cand, e.inputs)
        if req.prompt is not None:
            want = req.prompt
            got = [r.get("prompt")] + ([r["parts_prompt"]] if "parts_prompt" in r else [])
            ok = all(g == want for g in got)
            if not ok and first_diff is None:
                bad = next(g for g in got if g != want)
                first_diff = f"example {e.id}, " + ("no rendered prompt" if bad is None else _first_difference(bad, want))
        else:
            want_msgs = [{"role": role, "content": c} for role, c in req.messages or ()]
            ok = r.get("messages") == want_msgs
            if not ok and first_diff is None:
                first_diff = f"example {e.id}: messages differ"
        prompts_equal += int(ok)
        if count is not None and req.prompt is not None:
            want_tokens = count(req.prompt)
            token_checked += 1
            if r.get("prompt_tokens") == want_tokens:
                tokens_equal += 1
            elif first_token_diff is None:
                first_token_diff = (f"example {e.id}: the endpoint counted {r.get('prompt_tokens')} prompt tokens, "
                                    f"the optimizer's prompt has {want_tokens}")
    agree = [str(r["parsed"].get(out_name, "")) == str(p["best"]["prediction"].get(out_name, ""))
             for r, p in zip(rows, items)]
    identical = sum(1 for r, p in zip(rows, items) if r.get("text") == p["best"].get("text"))
    sampled = ev.temperature > 0
    agreement = None if sampled else sum(agree) / len(agree)

    verdict = judge(a, b, agreement=agreement, min_agreement=min_agreement, seed=seed,
                    reported_ci=(run.summary.get("best") or {}).get("test_ci"))
    failures = list(verdict["failures"])
    if prompts_equal < len(examples):
        failures.insert(0, f"{len(examples) - prompts_equal}/{len(examples)} prompts differ from the optimizer's "
                           f"(first: {first_diff})")
    if tokens_equal < token_checked:
        failures.insert(0, f"{token_checked - tokens_equal}/{token_checked} prompts reached the model with another "
                           f"length than the optimizer's ({first_token_diff}; for openai-chat: is the endpoint applying "
                           f"the artifact's chat_template?)")
    if client_meta.get("optimizer_modules"):
        failures.append(f"the plain client imported {', '.join(client_meta['optimizer_modules'])}")
    lats = [r["latency_s"] for r in rows if r.get("latency_s") is not None]
    return ParityReport(
        format=fmt, n=len(examples), endpoint=where, model=str(model_name), optimizer_mean=verdict["optimizer_mean"],
        optimizer_ci=verdict["optimizer_ci"], export_mean=verdict["export_mean"], diff=verdict["diff"],
        allowance=verdict["allowance"], diff_ci=verdict["diff_ci"], p_value=verdict["p_value"],
        p_test=verdict["p_test"], prompts_equal=prompts_equal,
        endpoint_prompt_tokens_equal=tokens_equal if token_checked else None,
        agreement=agreement, identical_text=identical, min_agreement=min_agreement, passed=not failures,
        failures=failures, first_prompt_difference=first_diff, wall_seconds=round(time.perf_counter() - t0, 3),
        client_optimizer_modules=list(client_meta.get("optimizer_modules") or []),
        latency_s_per_call=round(sum(lats) / len(lats), 4) if lats else None)


def judge(a: list[float], b: list[float], *, agreement: float | None = None, min_agreement: float = 0.9,
          reported_ci: list[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """The score rules of the parity check on paired per-example scores (a: optimizer, b: export).

    The allowance is the half-width of the optimizer's 95% interval: the larger of the interval
    the run reported for the test split (``reported_ci``) and the bootstrap interval on the sample,
    and never less than one example (1/n; a sample the optimizer got all right has a zero-width
    bootstrap interval). Fails when |mean(b) - mean(a)| exceeds it, when the paired test (exact
    McNemar for 0/1 scores, paired bootstrap otherwise) has p < 0.05, or when the agreement of
    parsed answers is below ``min_agreement``. (Prompt equality is checked by the caller.)
    """
    opt_ci = bootstrap_ci(a, seed=seed)
    allowance = max((opt_ci.high - opt_ci.low) / 2, 1.0 / len(a),
                    (reported_ci[1] - reported_ci[0]) / 2 if reported_ci else 0.0)
    diff = paired_bootstrap(a, b, seed=seed)
    if all(x in (0.0, 1.0) for x in list(a) + list(b)):
        p_value, p_test = float(mcnemar(a, b)["p_value"]), "McNemar exact"
    else:
        p_value, p_test = float(diff["p_value"]), "paired bootstrap"
    export_mean = sum(b) / len(b)
    failures = []
    if abs(export_mean - opt_ci.mean) > allowance + 1e-12:
        failures.append(f"export score {export_mean:.3f} is outside the optimizer's interval "
                        f"[{opt_ci.low:.3f}, {opt_ci.high:.3f}]: |Δ| {abs(export_mean - opt_ci.mean):.3f} > "
                        f"{allowance:.3f}")
    if p_value < 0.05:
        failures.append(f"the paired difference {diff['diff']:+.3f} is significant ({p_test} p={p_value:.3g})")
    if agreement is not None and agreement < min_agreement:
        failures.append(f"only {agreement:.0%} of answers agree with the optimizer's (minimum {min_agreement:.0%})")
    return {"optimizer_mean": opt_ci.mean, "optimizer_ci": [opt_ci.low, opt_ci.high], "export_mean": export_mean,
            "diff": diff["diff"], "diff_ci": [diff["low"], diff["high"]], "allowance": allowance,
            "p_value": p_value, "p_test": p_test, "failures": failures, "passed": not failures}


def _fail(report: ParityReport, artifact: str) -> ParityError:
    return ParityError(f"parity check failed for the {report.format} export: " + "; ".join(report.failures),
                       file=artifact, field="parity",
                       fix="do not ship this artifact; re-export the run unedited (or check the endpoint serves the "
                           "run's model with the artifact's settings)")


def export_run(run_dir: str | Path, fmt: str, out: str | Path, *, endpoint: str | None = None,
               model: str | None = None, lm: str | None = None, sample: int = 50, seed: int = 0,
               min_agreement: float = 0.9) -> ParityReport:
    """Build the artifact, check its parity, and write it (with its parity record) to ``out``.

    Raises ParityError, and writes nothing, when the check fails.
    """
    run = FinishedRun.open(run_dir)
    art = build_artifact(run, fmt)
    out = Path(out)
    suffix = ".yaml" if fmt == "yaml" else ".json"
    with tempfile.TemporaryDirectory(prefix="po-export-") as tmpd:
        draft = Path(tmpd) / f"draft{suffix}"
        draft.write_text(serialize(art, fmt), encoding="utf-8")
        report = check_parity(run, draft, fmt, endpoint=endpoint, model=model, lm=lm, sample=sample, seed=seed,
                              min_agreement=min_agreement)
    if not report.passed:
        raise _fail(report, str(out))
    record = report.to_dict()
    record["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if fmt == "dspy":
        art["prompt_optimizer"]["parity"] = record
    else:
        art["parity"] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(serialize(art, fmt), encoding="utf-8")
    os.replace(tmp, out)
    return report


def verify_export(run_dir: str | Path, artifact: str | Path, *, endpoint: str | None = None,
                  model: str | None = None, lm: str | None = None, sample: int = 50, seed: int = 0,
                  min_agreement: float = 0.9, raise_on_fail: bool = True) -> ParityReport:
    """Run the parity check on an existing export file (for example after someone edited it)."""
    run = FinishedRun.open(run_dir)
    _, fmt = read_artifact(artifact)
    report = check_parity(run, artifact, fmt, endpoint=endpoint, model=model, lm=lm, sample=sample, seed=seed,
                          min_agreement=min_agreement)
    if raise_on_fail and not report.passed:
        raise _fail(report, str(artifact))
    return report
