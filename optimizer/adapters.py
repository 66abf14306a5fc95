"""Where a prompt is rendered and an LM answer parsed.

``CompletionAdapter`` renders plain ``Field: value`` text for base models::

    <instruction>

    Sentence: a gripping film
    Sentiment: positive

    Sentence: <input>
    Sentiment:

and parses the first line of the continuation, or all of it for an output with ``format: text``, or its
first JSON value for ``format: json`` (``answers``); for several output fields, as in chain of thought,
it splits the continuation at each later field's prefix.
It is a ``dspy.Adapter``, so a DSPy program run with ``dspy.context(adapter=
CompletionAdapter())`` renders the same text. Chat models use DSPy's own
``ChatAdapter``. ``render_request`` turns either into one ``LMRequest`` (for chat, ``max_tokens`` plus
the framing's tokens); ``parse_response`` reads a chat answer that skips the framing plainly or as JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dspy

from .answers import json_problem, read_value
from .lm.base import LMRequest
from .plain_client import unframed_fields


def field_prefix(signature: type[dspy.Signature], name: str) -> str:
    extra = signature.fields[name].json_schema_extra or {}
    prefix = str(extra.get("prefix") or name.replace("_", " ").capitalize() + ":")
    return prefix if prefix.endswith(":") else prefix + ":"


def field_format(signature: type[dspy.Signature], name: str) -> str:
    """How an output field's answer is read: ``line`` (the default), ``text`` or ``json``."""
    return str((signature.fields[name].json_schema_extra or {}).get("format") or "line")


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v).strip()


class CompletionAdapter(dspy.Adapter):
    """Plain-text completion prompts for base (non-chat) models."""

    def render(self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]) -> str:
        blocks: list[str] = []
        instruction = (signature.instructions or "").strip()
        if instruction:
            blocks.append(instruction)
        for demo in demos:
            blocks.append(self._block(signature, demo, complete=True))
        blocks.append(self._block(signature, inputs, complete=False))
        return "\n\n".join(blocks)

    def _block(self, signature: type[dspy.Signature], values: dict[str, Any], *, complete: bool) -> str:
        lines = [f"{field_prefix(signature, n)} {_value(values.get(n, ''))}" for n in signature.input_fields]
        outputs = list(signature.output_fields)
        if complete:
            for n in outputs:
                if values.get(n) not in (None, ""):
                    lines.append(f"{field_prefix(signature, n)} {_value(values[n])}")
        else:
            lines.append(field_prefix(signature, outputs[0]))
        return "\n".join(lines)

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.render(signature, demos, inputs)}]

    def stop(self, signature: type[dspy.Signature]) -> tuple[str, ...]:
        # Not a bare "\n": base models often start the answer with a newline, and a stop there
        # returns an empty answer. The parser takes the first non-empty line.
        first_input = field_prefix(signature, next(iter(signature.input_fields)))
        if field_format(signature, list(signature.output_fields)[-1]) != "line":  # blank lines may be the answer's
            return ("\n" + first_input,)
        if len(signature.output_fields) == 1:
            return ("\n\n", "\n" + first_input, "\n" + field_prefix(signature, next(iter(signature.output_fields))))
        return ("\n\n", "\n" + first_input)

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        outputs = list(signature.output_fields)
        text = completion or ""
        if len(outputs) == 1:
            return {outputs[0]: read_value(text, field_format(signature, outputs[0]))}
        values: dict[str, Any] = {}
        rest = text
        for i, name in enumerate(outputs):
            if i + 1 < len(outputs):
                nxt = field_prefix(signature, outputs[i + 1])
                pos = rest.find(nxt)
                if pos < 0:
                    values[name] = rest.strip()
                    rest = ""
                else:
                    values[name] = rest[:pos].strip()
                    rest = rest[pos + len(nxt):]
            else:
                values[name] = read_value(rest, field_format(signature, name))
        # no final field found: fall back to the last line of the previous one
        if not values.get(outputs[-1]) and values.get(outputs[-2]):
            values[outputs[-1]] = values[outputs[-2]].strip().splitlines()[-1].strip()
            values["_parse_fallback"] = True
        return values


def get_adapter(kind: str) -> dspy.Adapter:
    if kind == "completion":
        return CompletionAdapter()
    if kind == "chat":
        return dspy.ChatAdapter()
    raise ValueError(f"unknown adapter {kind!r}")


def render_request(adapter: dspy.Adapter, signature: type[dspy.Signature], demos: list[dict[str, Any]],
                   inputs: dict[str, Any], *, max_tokens: int, temperature: float = 0.0,
                   sample: int = 0) -> LMRequest:
    """The one LMRequest for a program call."""
    if isinstance(adapter, CompletionAdapter):
        return LMRequest(prompt=adapter.render(signature, demos, inputs), max_tokens=max_tokens,
                         temperature=temperature, stop=adapter.stop(signature), sample=sample)
    messages = adapter.format(signature, demos, inputs)
    return LMRequest.chat([{"role": m["role"], "content": str(m["content"])} for m in messages],
                          max_tokens=max_tokens + framing_tokens(signature), temperature=temperature,
                          stop=(CHAT_END,), sample=sample)


#: the marker that ends a ChatAdapter reply: a stop sequence, so a model does not ramble on after it
CHAT_END = "[[ ## completed ## ]]"


def chat_header(name: str) -> str:
    """ChatAdapter's header of an output field, as the reply writes it before the value."""
    return f"[[ ## {name} ## ]]\n"


def readout_request(request: LMRequest, signature: type[dspy.Signature], top_k: int) -> LMRequest:
    """A program call turned into a label readout: the top-k log-probabilities of the answer's first token,
    greedy. A completion prompt asks for that one token; a chat reply is read after the answer field's
    header (``answer_prefix``), with room for the header on endpoints that must write it first."""
    if request.kind == "completion":
        return dataclasses.replace(request, max_tokens=1, temperature=0.0, stop=(), logprobs=top_k)
    answer = list(signature.output_fields)[-1]
    return dataclasses.replace(request, max_tokens=framing_tokens(signature) + 1, temperature=0.0, stop=(),
                               logprobs=top_k, answer_prefix=chat_header(answer))


def framing_tokens(signature: type[dspy.Signature]) -> int:
    """Tokens a chat answer spends on ChatAdapter's framing (a ``[[ ## field ## ]]`` header per output
    field, then ``[[ ## completed ## ]]``): the task's ``max_tokens`` budgets the answer itself. An upper
    estimate, a token per 2 characters of each marker and its newlines (a tokenizer splits ``[[ ##`` into
    several tokens)."""
    markers = [f"[[ ## {n} ## ]]\n" for n in signature.output_fields] + ["\n\n[[ ## completed ## ]]"]
    return sum(len(m) // 2 + 2 for m in markers)


def parse_response(adapter: dspy.Adapter, signature: type[dspy.Signature], text: str) -> tuple[dict[str, Any], bool]:
    """Parsed output fields and whether parsing succeeded. A chat answer that misses the adapter's framing
    is read plainly or as JSON (``plain_client.unframed_fields``, as exports are read) before it counts as a
    parse failure (scored wrong)."""
    formats = {n: field_format(signature, n) for n in signature.output_fields}
    try:
        values = adapter.parse(signature, text)
    except Exception:
        if isinstance(adapter, CompletionAdapter):
            return {n: "" for n in signature.output_fields}, False
        values = unframed_fields(list(signature.output_fields), text or "", formats)
        if values is None:
            return {n: "" for n in signature.output_fields}, False
    ok = all(str(values.get(n) or "").strip() for n in signature.output_fields) and not values.pop(
        "_parse_fallback", False)
    values.pop("_parse_fallback", None)
    for name, fmt in formats.items():
        if fmt == "json":  # the value read as JSON (a chat reply's section too), then checked
            values[name] = read_value(str(values.get(name) or ""), "json")
            schema = (signature.fields[name].json_schema_extra or {}).get("schema")
            ok = ok and json_problem(values[name], schema) is None
    return values, ok
