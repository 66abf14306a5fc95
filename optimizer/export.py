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

**A chat run whose winner reads labels on the local backend** (``local-instruct``, ``scoring`` other
than ``generate``) read each label at the first token of a reply that the backend opened itself: the
messages through the model's own chat template, then the answer field's header. A chat endpoint
writes its own reply (on TREC 70% of its answers agreed), so such a winner exports only as
``completion``: that rendered text as the template (``chat_template: applied ...``), sent to
``/v1/completions`` with logprobs, which is the prompt the model read, token for token.

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

import os
import tempfile
import time
from pathlib import Path

from .artifacts import CHAT_TEMPLATE, FORMATS, build_artifact, read_artifact, render_chat, serialize
from .errors import ParityError
from .llamacpp_server import llama_server
from .parity import CLIENT, ParityReport, check_parity, judge
from .runread import FinishedRun

# The layout: building, writing and reading artifacts in ``optimizer.artifacts``; the llama.cpp server in
# ``optimizer.llamacpp_server``; the parity check in ``optimizer.parity``; the client in ``plain_client.py``.
__all__ = ["CHAT_TEMPLATE", "CLIENT", "FORMATS", "ParityError", "ParityReport", "build_artifact", "check_parity",
           "export_run", "judge", "llama_server", "read_artifact", "render_chat", "serialize", "verify_export"]


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
    # ``server=llama_server`` is looked up in this module when called, so replacing
    # ``optimizer.export.llama_server`` (as a test does) replaces the server the check starts.
    out = Path(out)
    suffix = ".yaml" if fmt == "yaml" else ".json"
    with tempfile.TemporaryDirectory(prefix="po-export-") as tmpd:
        draft = Path(tmpd) / f"draft{suffix}"
        draft.write_text(serialize(art, fmt), encoding="utf-8")
        report = check_parity(run, draft, fmt, endpoint=endpoint, model=model, lm=lm, sample=sample, seed=seed,
                              min_agreement=min_agreement, server=llama_server)
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
    doc, fmt = read_artifact(artifact)
    report = check_parity(run, artifact, fmt, endpoint=endpoint, model=model, lm=lm, sample=sample, seed=seed,
                          min_agreement=min_agreement, server=llama_server)
    if raise_on_fail and not report.passed:
        raise _fail(report, str(artifact))
    return report
