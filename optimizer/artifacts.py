"""Export artifacts: building the winner of a run as each format, writing and reading them back.

The formats, what they carry and why chat messages of a base-model run come with a chat template
are described in ``optimizer.export`` (``optimize export``). ``optimize bench`` reads exports back
as candidates (``artifact_template``); the parity check (``optimizer.parity``) renders and sends
them with ``plain_client.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from . import __version__
from .adapters import chat_header, field_format, field_prefix
from .errors import ConfigError
from .evaluate import Evaluator
from .lm import backend_class
from .lm.base import LMRequest
from .lm.profiles import LMProfile
from .program import Candidate, demo_dicts
from .rendering import renderer
from .runread import FinishedRun, predictor_state
from .scoring import TOP_K

FORMATS = ("openai-chat", "completion", "yaml", "dspy")

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


# ---------------------------------------------------------------------------- building

def run_evaluator(run: FinishedRun) -> Evaluator:
    """The Evaluator that renders the run's prompts (rendering only, no backend)."""
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
    return _signature_fields(ev.signature(Candidate(run.task.instruction)))


def _signature_fields(sig: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A signature's input and output fields as an export lists them (name, prefix, format unless line)."""
    ins = [{"name": n, "prefix": field_prefix(sig, n)} for n in sig.input_fields]
    outs = [{"name": n, "prefix": field_prefix(sig, n),
             **({"format": field_format(sig, n)} if field_format(sig, n) != "line" else {})} for n in sig.output_fields]
    return ins, outs


def opened_readout(run: FinishedRun, ev: Evaluator, cand: Candidate) -> Callable[[LMRequest], str] | None:
    """For a one-call winner whose chat label readout the backend runs itself (``chat_renderer``: the
    model's chat template applied in-process, the reply opened at the answer field's header): the text the
    model read for a request. None for every other winner (generated answers, completion prompts, chat
    endpoints, programs of steps)."""
    if ev.adapter_kind != "chat" or cand.scoring == "generate" or run.task.steps:
        return None
    render = backend_class(run.profile).chat_renderer(run.profile)
    if render is None:
        return None
    return lambda req: render([{"role": r, "content": c} for r, c in req.messages or ()]) + (req.answer_prefix or "")


def _parsing(ev: Evaluator, run: FinishedRun, opened: bool = False) -> dict[str, Any]:
    _, outs = _fields(ev, run)
    best = run.summary.get("best") or {}
    if (best.get("scoring") or "generate") != "generate":
        offsets = best.get("calibration") if best.get("scoring") in ("calibrated", "batch") else None
        spec = {"rule": "label-likelihood",
                "description": "request 1 token with logprobs; each label scores the best top-k token that starts "
                               "it, minus its calibration offset; the answer is the best label",
                "fields": outs, "answer_field": run.task.output.name, "labels": run.task.label_set,
                "top_logprobs": min(TOP_K, run.profile.top_logprobs), "calibration": offsets,
                "metric": run.summary.get("metric")}
        if ev.adapter_kind == "chat" and not opened:  # read after the header in the reply (plain_client.answer_top)
            spec["answer_prefix"] = chat_header(run.task.output.name)
            spec["description"] = ("ask for the reply with logprobs and top_logprobs; at the answer's first token "
                                   "after answer_prefix each label scores the best top-k token that starts it, "
                                   "minus its calibration offset; the answer is the best label")
        if offsets is not None:  # where the offsets come from: one content-free input, or the validation inputs
            spec["calibration_source"] = "validation-batch" if best.get("scoring") == "batch" else "content-free"
        return spec
    return _generated_parsing(ev, run.task, outs, run.summary.get("metric"))


def _generated_parsing(ev: Evaluator, task: Any, outs: list[dict[str, str]], metric: Any) -> dict[str, Any]:
    """How a generated answer of ``task`` (a run's, or one step's) is read."""
    if ev.adapter_kind == "chat":
        rule, text = "chat-fields", "the text after each `[[ ## name ## ]]` marker, stripped"
    elif len(outs) == 1 and outs[0].get("format") == "json":
        rule, text = "json-object", "the first JSON object or array in the answer, written compactly"
    elif len(outs) == 1 and outs[0].get("format") == "text":
        rule, text = "whole-text", "the whole answer, stripped"
    elif len(outs) == 1:
        rule, text = "first-line", "the first non-empty line of the answer, stripped"
    else:
        rule, text = "prefixed-fields", ("split the answer at each later field's prefix; the last field is read "
                                         "by its format (first-line when none is given) after its prefix")
    spec: dict[str, Any] = {"rule": rule, "description": text, "fields": outs, "answer_field": task.output.name}
    if task.label_set:
        spec["labels"] = task.label_set
    if task.output.json_schema is not None:  # what the optimizer checked each answer against
        spec["schema"] = task.output.json_schema
    spec["metric"] = metric
    return spec


def _model_block(run: FinishedRun, ev: Evaluator, completion: bool = False) -> dict[str, Any]:
    """The model and the request's parameters: its answer budget (past a chat adapter's framing), stops,
    readout; ``completion``: a chat readout sent as its rendered prompt (one token, with logprobs)."""
    scoring = (run.summary.get("best") or {}).get("scoring") or "generate"
    if run.task.steps:  # every step says its own parameters
        req = ev.step_request(ev.seed(), ev.order[-1], {})  # type: ignore[attr-defined]
    else:
        req = ev.request(Candidate(run.task.instruction, scoring="generate" if scoring == "generate" else "likelihood"),
                         {f.name: "" for f in run.task.inputs})
    if completion:
        req = dataclasses.replace(req, prompt="", messages=None, max_tokens=1, answer_prefix=None)
    block: dict[str, Any] = {"model": run.profile.model, "parameters": _parameters(req, run.profile)}
    extra = _extra_body(run.profile)
    if extra:
        block["extra_body"] = extra
    endpoint = _endpoint_block(run.profile)
    if endpoint is not None:
        block["endpoint"] = endpoint
    return block


def _parameters(req: Any, profile: LMProfile) -> dict[str, Any]:
    """The request's decoding parameters as the endpoint takes them."""
    params: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": req.temperature}
    if req.stop:
        params["stop"] = list(req.stop)[:4]
    if req.logprobs:
        top_k = min(req.logprobs, profile.top_logprobs)
        params.update({"logprobs": True, "top_logprobs": top_k} if req.kind == "chat" else {"logprobs": top_k})
    if profile.max_tokens_field != "max_tokens":
        params[profile.max_tokens_field] = params.pop("max_tokens")
    return params


def _extra_body(profile: LMProfile) -> dict[str, Any]:
    """Fields beyond the OpenAI API that the endpoint needs to decode as the optimizer did: llama.cpp's server
    applies ``repeat_penalty`` 1.1 by default, the embedded backend decodes with 1.0."""
    return dict(backend_class(profile).export_extra_body)


def _endpoint_block(profile: LMProfile) -> dict[str, Any] | None:
    """Where the run's own endpoint is (the name of its key's environment variable, never the key)."""
    if backend_class(profile).serves_openai_api:
        return {"base_url": profile.base_url, "api": profile.api, "api_key_env": profile.api_key_env}
    return None


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
    ev = run_evaluator(run)
    cand = run.candidate("best")
    if run.task.steps:
        return _program_artifact(run, ev, cand, fmt)
    ph = _placeholders(run)
    ins, outs = _fields(ev, run)
    common = {**_model_block(run, ev), "output_parsing": _parsing(ev, run)}
    if cand.knn and ev.adapter_kind == "chat":  # yaml's retrieval rule renders completion templates only
        raise ConfigError(f"this chat run's winner gives each input its {cand.knn} most similar demos (kNN), which "
                          f"no export format renders as chat messages yet", field="--format",
                          fix="optimize with `selectors` without knn for an exportable winner (or bench the run "
                              "directory)")
    if cand.knn and fmt != "yaml":
        raise ConfigError(f"this run's winner gives each input its {cand.knn} most similar demos (kNN), which a "
                          f"fixed {fmt} template cannot express", field="--format",
                          fix="export it as yaml (it carries the demo pool and the retrieval rule)")
    opened = opened_readout(run, ev, cand)
    if opened is not None and fmt != "completion":
        raise ConfigError(f"this run's winner reads labels with the model's reply opened at the answer field's header "
                          f"(the {run.profile.backend} backend applies the model's chat template itself), which a "
                          f"chat endpoint cannot do (it writes its own reply)", field="--format",
                          fix="export it as completion: the chat prompt as the model read it, for /v1/completions "
                              "with logprobs")
    if opened is not None:
        return {"format": "completion", "api": "completions", "inputs": run.task.input_names,
                **_model_block(run, ev, completion=True), "output_parsing": _parsing(ev, run, opened=True),
                "template": opened(ev.request(cand, ph)), "chat_template": "applied: the model's own (its GGUF's), "
                "the assistant's reply opened at the answer field's header", "render": RENDER_RULES,
                "source": _source(run)}
    if fmt == "openai-chat" and cand.scoring != "generate" and ev.adapter_kind == "completion":
        raise ConfigError(f"this run's winner reads the answer from label log-probabilities of a completion "
                          f"prompt (scoring {cand.scoring!r}), which a chat endpoint does not expose",
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


def _program_artifact(run: FinishedRun, ev: Any, cand: Candidate, fmt: str) -> dict[str, Any]:
    """A program of steps as yaml: the steps in the order they run, each with its fields, instruction, demos,
    template (a kNN step: its pool and retrieval rule), decoding parameters and output parsing; a plain client
    runs them in turn, each step's parsed
    output filling the placeholders of the steps after it."""
    if fmt != "yaml":
        raise ConfigError(f"this run's winner is a program of {len(cand.steps)} steps, which one {fmt} prompt cannot "
                          "express", field="--format", fix="export it as yaml (one template per step)")
    chat = ev.adapter_kind == "chat"
    if chat and any(cand.steps[i].knn for i in ev.order):
        raise ConfigError("this chat run's winner retrieves each input's demos (kNN) in a step, which the yaml "
                          "export writes only as a completion template", field="--format",
                          fix="optimize it without the knn selector (`selectors:` without knn) to export it")
    steps = []
    for i in ev.order:
        sub, sc = ev.steps[i], cand.steps[i]
        ins, outs = _signature_fields(sub.signature(sc))
        req = ev.step_request(cand, i, {})
        ph = {n: "{{" + n + "}}" for n in sub.task.input_names}
        step: dict[str, Any] = {"name": ev.names[i], "inputs": ins, "outputs": outs, "instruction": sc.instruction}
        if sc.knn:  # per-input demos: the pool and the rule that retrieves them (no fixed template)
            step.update(demos=[], retrieval={"method": "tfidf-knn", "k": sc.knn, "fields": sub.task.input_names,
                                             "reference": "optimizer/plain_client.py: KnnIndex"},
                        demo_pool=demo_dicts(sub.task, sc.demos))
        elif chat:  # a chat adapter's messages, sent to the endpoint's own chat template
            step.update(api="chat", demos=demo_dicts(sub.task, sc.demos), messages=chat_messages(sub, sc, ph))
        else:
            step.update(demos=demo_dicts(sub.task, sc.demos), template=sub.prompt_text(sc, ph))
        steps.append({**step, "parameters": _parameters(req, run.profile),
                      "output_parsing": _generated_parsing(sub, sub.task, outs, None)})
    block = _model_block(run, ev)
    block.pop("parameters")
    final = {**steps[-1]["output_parsing"], "metric": run.summary.get("metric")}
    return {"format": "yaml", "name": f"{run.task.task}-winner", "api": "chat" if chat else "completions", **block,
            "inputs": run.task.input_names, "output_parsing": final, "steps": steps, "render": RENDER_RULES,
            "source": _source(run)}


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
    if doc.get("steps"):
        raise ConfigError("this export is a program of steps, one template per step", file=where, field="steps",
                          fix="bench the run directory instead")
    if str(doc.get("chat_template", "")).startswith("applied"):
        raise ConfigError("this export is a chat prompt with the model's chat template already applied, not a "
                          "prompt of the run's chat adapter", file=where, field="template",
                          fix="bench the run directory instead")
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

