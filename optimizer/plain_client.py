"""A production-style client for exported prompts: plain Python, the ``openai`` client, nothing of ours.

This file deliberately imports only the standard library, ``openai`` and (for YAML and chat-template
artifacts) ``yaml`` and ``jinja2``; it never imports the ``optimizer`` package. ``optimize export``
runs it in a separate interpreter (``python -I``) to check that an exported artifact, used the way
a production service would use it, reproduces the optimizer's prompts and answers. It is also the
reference for using an export by hand::

    python plain_client.py ARTIFACT INPUTS.jsonl OUT.jsonl --base-url http://127.0.0.1:8080/v1 [--model M]

``INPUTS.jsonl``: one ``{"id": ..., "inputs": {field: value}}`` per line. ``OUT.jsonl``: per input
the rendered prompt (or messages), the raw answer, the parsed output fields, token counts and
latency; the last line is ``{"_client": {...}}`` and lists any ``optimizer`` module that got
imported (there must be none).

Rendering rules (``render: completion-v1`` in the artifacts):

- ``{{name}}`` placeholders are replaced, in one pass, by the input value with surrounding
  whitespace stripped;
- from parts (``yaml``, ``dspy``): the instruction, then one block per demo, then the input block,
  separated by blank lines; a block is ``<prefix> <value>`` lines, input fields first, then the
  demo's non-empty output fields; the input block ends with the first output field's prefix;
- ``yaml`` with ``retrieval`` (per-input demos): the demos are the ``retrieval.k`` pool entries of
  ``demo_pool`` nearest to the input (``KnnIndex``: TF-IDF cosine over the ``retrieval.fields``),
  least similar first, then rendered from parts as above;
- ``openai-chat`` messages are sent as they are; the artifact's ``chat_template`` (a Jinja
  template, applied by the server) turns them back into the completion prompt;
- ``yaml`` with ``steps`` (a program): each step in the listed order is a ``yaml`` artifact of its
  own, filled with the task inputs and the fields the steps before it wrote (``run_program``); the
  output line carries every step's prompt and text, and every field written.

Parsing (``output_parsing``): ``first-line`` takes the first non-empty line of the answer;
``whole-text`` the whole answer, stripped (an output with ``format: text``); ``json-object`` the first
JSON object or array in the answer, written compactly (``format: json``; the answer stripped when none
parses); ``prefixed-fields`` splits the answer at the later fields' prefixes (chain of thought), the
last field read by its ``format`` (``line`` when absent) as above;
``chat-fields`` reads ``[[ ## name ## ]]`` sections (DSPy's chat format); ``label-likelihood``
(classification) asks for one token with ``logprobs`` top-k, scores each label by the best
top-k token that starts it (both compared lower-cased, without punctuation, articles and spaces),
subtracts the ``calibration`` offset of each label where one is given, and answers the best label;
on a chat endpoint (``openai-chat``) it asks for ``logprobs``/``top_logprobs`` on the reply and reads the
top-k of the answer's first token after ``answer_prefix`` (the ``[[ ## name ## ]]`` header), see
``answer_top``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import string
import sys
import time

PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")


def value_text(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v).strip()


def fill(text: str, inputs: dict) -> str:
    """Replace ``{{name}}`` placeholders by the stripped input values (one pass)."""
    return PLACEHOLDER.sub(lambda m: value_text(inputs[m.group(1)]) if m.group(1) in inputs else m.group(0), text)


def render_parts(instruction: str, fields: list[dict], demos: list[dict], inputs: dict) -> str:
    """The completion prompt from instruction, fields ({name, prefix, role}), demos and inputs."""
    ins = [f for f in fields if f["role"] == "input"]
    outs = [f for f in fields if f["role"] == "output"]
    blocks = [instruction.strip()] if instruction and instruction.strip() else []
    for d in demos:
        lines = [f"{f['prefix']} {value_text(d.get(f['name'], ''))}" for f in ins]
        lines += [f"{f['prefix']} {value_text(d[f['name']])}" for f in outs if d.get(f["name"]) not in (None, "")]
        blocks.append("\n".join(lines))
    blocks.append("\n".join([f"{f['prefix']} {value_text(inputs.get(f['name'], ''))}" for f in ins]
                            + [outs[0]["prefix"]]))
    return "\n\n".join(blocks)


def render_chat_template(template: str, messages: list[dict]) -> str:
    """What a server applying ``template`` sends to the model (without the BOS token it adds)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, bos_token="", eos_token="",
                                            add_generation_prompt=True)


def _norm(text: str) -> str:
    s = re.sub(f"[{re.escape(string.punctuation)}]", " ", str(text).lower())
    return "".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class KnnIndex:
    """TF-IDF nearest neighbours over a demo pool (per-input demos, as in KATE).

    Words of 2+ characters, lower-cased; tf = count; idf = ln((1 + n) / (1 + df)) + 1; vectors
    L2-normalised; similarity = cosine. ``nearest`` returns the k most similar pool indices,
    least similar first so that the most similar demo sits next to the input (ties: lower index
    nearer). The optimizer retrieves with this same class, so an export retrieves what it scored."""

    def __init__(self, texts: list):
        docs = [self._counts(t) for t in texts]
        n = len(docs)
        df: dict = {}
        for d in docs:
            for w in d:
                df[w] = df.get(w, 0) + 1
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}
        self.vectors = [self._unit({w: c * self.idf[w] for w, c in d.items()}) for d in docs]

    @staticmethod
    def _counts(text: str) -> dict:
        out: dict = {}
        for w in _TOKEN.findall(str(text).lower()):
            out[w] = out.get(w, 0) + 1
        return out

    @staticmethod
    def _unit(v: dict) -> dict:
        norm = sum(x * x for x in v.values()) ** 0.5
        return {w: x / norm for w, x in v.items()} if norm else {}

    def nearest(self, text: str, k: int) -> list:
        q = self._unit({w: c * self.idf[w] for w, c in self._counts(text).items() if w in self.idf})
        sims = [(sum(x * v.get(w, 0.0) for w, x in q.items()), -i) for i, v in enumerate(self.vectors)]
        top = sorted(sims, reverse=True)[:k]
        return [-i for _, i in reversed(top)]


_INDEXES: dict = {}


def input_text(values: dict, names: list) -> str:
    """What retrieval compares: the input fields' values joined by newlines."""
    return "\n".join(value_text(values.get(n, "")) for n in names)


def label_scores(top: dict, labels: list) -> dict:
    """Each label's score from one position's top-k ``{token: logprob}``: the best token that starts it
    (None when no top-k token does). The optimizer scores labels with this same function."""
    out: dict = {}
    for label in labels:
        want = _norm(label)
        seen = [lp for tok, lp in top.items() if _norm(tok) and want.startswith(_norm(tok))]
        out[label] = max(seen) if seen else None
    return out


def answer_top(positions: list, prefix: str) -> dict:
    """The top-k ``{token: logprob}`` of a chat reply's answer: at its first non-blank token after ``prefix``
    (both compared without surrounding whitespace), or at its first non-blank token when the reply does not
    open with the prefix's first characters (a plain answer); ``{}`` when neither. ``positions``: the reply's
    ``(token, {token: logprob})`` pairs in order. The optimizer's OpenAI backend reads chat replies with it."""
    want, text = prefix.strip(), ""
    for token, top in positions:
        if token.strip():
            head = text.strip()
            if want and head.endswith(want):
                return dict(top)
            if not head and not (want and token.lstrip().startswith(want[:2])):
                return dict(top)
        text += token
    return {}


def chat_positions(logprobs) -> list:
    """``(token, {token: logprob})`` pairs from a chat completion's ``choice.logprobs``."""
    content = getattr(logprobs, "content", None) or []
    return [(c.token, {t.token: t.logprob for t in (c.top_logprobs or [])}) for c in content]


def pick_label(top: dict, spec: dict) -> str:
    """The label-likelihood answer from one position's top-k ``{token: logprob}``."""
    calibration = spec.get("calibration") or {}
    best, best_score = "", None
    for label, lp in label_scores(top, spec["labels"]).items():
        if lp is None:
            continue
        score = lp - (calibration.get(label) or 0.0)
        if best_score is None or score > best_score:
            best, best_score = label, score
    return best


def first_json(text: str):
    """The first JSON object or array in ``text``, written compactly (keys in their order, non-ASCII kept);
    None when none parses."""
    decoder = json.JSONDecoder()
    text = text or ""
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                obj, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            return json.dumps(obj, ensure_ascii=False)
    return None


def read_value(text: str, fmt: str = "line") -> str:
    """An output field's value by its ``format``: ``line`` the first non-empty line, ``text`` all of it,
    ``json`` the first JSON value written compactly (the text itself when none parses); stripped."""
    text = text or ""
    if fmt == "text":
        return text.strip()
    if fmt == "json":
        found = first_json(text)
        return found if found is not None else text.strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def parse(text: str, spec: dict) -> dict:
    rule = spec["rule"]
    names = [f["name"] for f in spec["fields"]]
    formats = {f["name"]: f.get("format", "line") for f in spec["fields"]}
    if rule in ("first-line", "whole-text", "json-object"):
        return {names[0]: read_value(text, {"first-line": "line", "whole-text": "text"}.get(rule, "json"))}
    if rule == "prefixed-fields":
        values, rest = {}, text or ""
        for i, f in enumerate(spec["fields"]):
            if i + 1 < len(spec["fields"]):
                nxt = spec["fields"][i + 1]["prefix"]
                pos = rest.find(nxt)
                if pos < 0:
                    values[f["name"]], rest = rest.strip(), ""
                else:
                    values[f["name"]], rest = rest[:pos].strip(), rest[pos + len(nxt):]
            else:
                values[f["name"]] = read_value(rest, formats[f["name"]])
        if not values.get(names[-1]) and len(names) > 1 and values.get(names[-2]):
            values[names[-1]] = values[names[-2]].strip().splitlines()[-1].strip()
        return values
    if rule == "label-likelihood":  # ``text`` is already the picked label
        return {spec["answer_field"]: text.strip()}
    if rule == "chat-fields":
        parts = re.split(r"\[\[ ## (\w+) ## \]\]", text or "")
        found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        if not all(found.get(n) for n in names):
            found = unframed_fields(names, text or "", formats) or found
        return {n: read_value(found.get(n, ""), "text" if formats[n] == "line" else formats[n]) for n in names}
    raise ValueError(f"unknown output_parsing rule {rule!r}")


_MARKER = re.compile(r"\[\[\s*##\s*(\w+)\s*##\s*\]\]")


def unframed_fields(names: list, text: str, formats: dict | None = None):
    """A chat reply without the ``[[ ## name ## ]]`` framing: a JSON object naming every output field (any
    case), or, for one output field, its value by its format (``read_value``; ``line`` when ``formats`` does
    not say) with stray markers and backticks taken out; None when neither. The optimizer reads chat
    replies with this same function."""
    formats = formats or {}
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start:end + 1])
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            lower = {str(k).lower(): v for k, v in obj.items()}
            got = {n: lower.get(n.lower()) for n in names}
            if all(v not in (None, "") for v in got.values()):
                return {n: v if isinstance(v, str) else json.dumps(v) for n, v in got.items()}
    if len(names) == 1:
        fmt = formats.get(names[0], "line")
        plain = _MARKER.sub("", text)
        if fmt == "json":  # a fenced block's language tag stays out of the way of the JSON
            plain = re.sub(r"```[A-Za-z]*", "", plain)
        value = read_value(plain.replace("`", "") if fmt != "json" else plain, fmt)
        if value:
            return {names[0]: value}
    return None


def load_artifact(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def prepare(art: dict, inputs: dict) -> dict:
    """The request for one input: {'api', 'prompt' or 'messages', plus what to compare}."""
    if "prompt_optimizer" in art:  # a DSPy program JSON with our block
        meta = art["prompt_optimizer"]
        state = art if isinstance(art.get("signature"), dict) else next(
            v for v in art.values() if isinstance(v, dict) and isinstance(v.get("signature"), dict))
        sig = state["signature"]
        names = [(n, "input") for n in meta["inputs"]] + [(n, "output") for n in meta["outputs"]]
        if len(names) != len(sig["fields"]):
            raise ValueError("signature fields do not match prompt_optimizer.inputs/outputs")
        fields = [{"name": n, "role": r, "prefix": f["prefix"]} for (n, r), f in zip(names, sig["fields"])]
        prompt = render_parts(sig.get("instructions") or "", fields, state.get("demos") or [], inputs)
        return {"api": "completions", "prompt": prompt}
    fmt = art["format"]
    if fmt == "completion":
        return {"api": "completions", "prompt": fill(art["template"], inputs)}
    if fmt == "yaml" and art.get("retrieval"):  # per-input demos: the k nearest of the pool
        fields = [{**f, "role": "input"} for f in art["inputs"]] + [{**f, "role": "output"} for f in art["outputs"]]
        pool = art["demo_pool"]
        names = art["retrieval"]["fields"]
        held = _INDEXES.get(id(pool))
        if held is None or held[0] is not pool:  # the pool is kept alive with its index: no id reuse
            held = _INDEXES[id(pool)] = (pool, KnnIndex([input_text(d, names) for d in pool]))
        index = held[1]
        demos = [pool[i] for i in index.nearest(input_text(inputs, names), int(art["retrieval"]["k"]))]
        return {"api": "completions", "prompt": render_parts(art.get("instruction") or "", fields, demos, inputs)}
    if fmt == "yaml":
        fields = [{**f, "role": "input"} for f in art["inputs"]] + [{**f, "role": "output"} for f in art["outputs"]]
        from_parts = render_parts(art.get("instruction") or "", fields, art.get("demos") or [], inputs)
        return {"api": "completions", "prompt": fill(art["template"], inputs), "parts_prompt": from_parts}
    if fmt == "openai-chat":
        messages = [{"role": m["role"], "content": fill(m["content"], inputs)} for m in art["messages"]]
        out = {"api": "chat", "messages": messages}
        if art.get("chat_template"):
            out["prompt"] = render_chat_template(art["chat_template"], messages)
        return out
    raise ValueError(f"unknown artifact format {fmt!r}")


def step_values(step: dict, values: dict) -> dict:
    """A step's input values from what is known so far (a missing one is empty text)."""
    return {f["name"]: values.get(f["name"], "") for f in step["inputs"]}


def run_program(art: dict, inputs: dict, call) -> dict:
    """A program of steps (``steps`` in a yaml export): each step in the listed order, its template (a chat
    step: its messages) filled with the task inputs and the outputs of the steps before it, sent by
    ``call(prompt, parameters)`` (``prompt`` is the list of messages for a chat step; ``call`` returns the
    text and the usage), and its answer parsed by its own rule. Returns the last step's text, every field the
    steps wrote (``parsed``) and each step's prompt (or messages) and text."""
    values, written, steps, text = dict(inputs), {}, [], ""
    for st in art["steps"]:
        given = step_values(st, values)
        fields = [{**f, "role": "input"} for f in st["inputs"]] + [{**f, "role": "output"} for f in st["outputs"]]
        if st.get("messages"):  # a chat step
            prompt = [{"role": m["role"], "content": fill(m["content"], given)} for m in st["messages"]]
            rec = {"name": st["name"], "messages": prompt}
        else:
            if st.get("retrieval"):  # per-input demos: the k nearest of the step's pool
                prompt = prepare({**st, "format": "yaml"}, given)["prompt"]
                parts = prompt
            else:
                prompt = fill(st["template"], given)
                parts = render_parts(st.get("instruction") or "", fields, st.get("demos") or [], given)
            rec = {"name": st["name"], "prompt": prompt, "parts_prompt": parts}
        if call is not None:
            text, usage = call(prompt, st["parameters"])
            got = parse(text, st["output_parsing"])
            for f in st["outputs"]:  # every field the step writes
                values[f["name"]] = written[f["name"]] = str(got.get(f["name"]) or "")
            rec.update(text=text, prompt_tokens=getattr(usage, "prompt_tokens", None))
        steps.append(rec)
        if call is None:  # rendering only: the next step needs this one's answer
            break
    return {"steps": steps, "text": text, "parsed": written}


def meta_of(art: dict) -> dict:
    return art["prompt_optimizer"] if "prompt_optimizer" in art else art


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("inputs")
    ap.add_argument("out")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model")
    ap.add_argument("--api-key-env", help="name of the environment variable holding the key")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args(argv)
    try:
        art = load_artifact(args.artifact)
        meta = meta_of(art)
        model = args.model or meta["model"]
        params = dict(meta.get("parameters") or {})
        extra = meta.get("extra_body") or None
        spec = meta["output_parsing"]
        client = None
        if not args.render_only:
            import openai

            key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
            client = openai.OpenAI(base_url=args.base_url, api_key=key or "no-key", max_retries=2, timeout=120)
        def call(prompt, parameters):  # one step of a program (a chat step: a list of messages)
            if isinstance(prompt, list):
                r = client.chat.completions.create(model=model, messages=prompt, extra_body=extra, **parameters)
                return r.choices[0].message.content or "", r.usage
            r = client.completions.create(model=model, prompt=prompt, extra_body=extra, **parameters)
            return r.choices[0].text or "", r.usage

        with open(args.inputs, encoding="utf-8") as fh, open(args.out, "w", encoding="utf-8") as out:
            for line in fh:
                if not line.strip():
                    continue
                item = json.loads(line)
                if art.get("steps"):
                    t0 = time.perf_counter()
                    rec = {"id": item["id"], **run_program(art, item["inputs"], call if client is not None else None)}
                    rec["latency_s"] = round(time.perf_counter() - t0, 5)
                    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    continue
                req = prepare(art, item["inputs"])
                rec = {"id": item["id"], **{k: v for k, v in req.items() if k != "api"}}
                if client is not None:
                    t0 = time.perf_counter()
                    if req["api"] == "completions":
                        r = client.completions.create(model=model, prompt=req["prompt"], extra_body=extra, **params)
                        text = r.choices[0].text or ""
                        if spec["rule"] == "label-likelihood":
                            lp = r.choices[0].logprobs
                            top = dict((lp.top_logprobs or [{}])[0]) if lp is not None else {}
                            text = pick_label(top, spec)
                    else:
                        r = client.chat.completions.create(model=model, messages=req["messages"], extra_body=extra,
                                                           **params)
                        text = r.choices[0].message.content or ""
                        if spec["rule"] == "label-likelihood":
                            text = pick_label(answer_top(chat_positions(r.choices[0].logprobs),
                                                         spec.get("answer_prefix") or ""), spec)
                    rec.update({"text": text, "parsed": parse(text, spec),
                                "latency_s": round(time.perf_counter() - t0, 5),
                                "prompt_tokens": getattr(r.usage, "prompt_tokens", None),
                                "completion_tokens": getattr(r.usage, "completion_tokens", None)})
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            ours = sorted(m for m in sys.modules if m == "optimizer" or m.startswith("optimizer."))
            out.write(json.dumps({"_client": {"optimizer_modules": ours, "python": sys.version.split()[0]}}) + "\n")
    except Exception as exc:  # one line for the caller
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(f"plain client failed: {msg}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
