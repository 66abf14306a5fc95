"""The ``local`` backend: a GGUF model run in-process by llama-cpp-python.

Default model: the embedded Gemma 3 270M (Q4_K_M); ``model: qwen2.5-coder-0.5b-instruct-q4_k_m`` is the
embedded instruct model. Both are assembled on first use into the cache directory (``_embedded``); any
other GGUF file through ``model_path``.
Calls are sequential (one lock); llama.cpp reuses the KV cache of the longest
prompt prefix shared with the previous call, so evaluating one candidate's
examples in a row only pays for each example's own tokens.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Callable

from ..errors import ConfigError, LMError
from ._embedded import embedded_model_path
from .base import LMBackend, LMRequest, LMResponse
from .cache import ResponseCache
from .profiles import LMProfile


_LOG_CALLBACK = None


def _silence_llama_logs() -> None:
    """llama.cpp logs to stderr even with verbose=False; the CLI's stderr is for one-line errors."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _quiet(level, text, user_data):  # pragma: no cover - called from C
        return None

    _LOG_CALLBACK = _quiet
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def _vocabulary(profile: LMProfile):
    """The profile's GGUF loaded with its vocabulary only (tokenizer and metadata, no weights); None when it
    cannot be loaded."""
    try:
        from llama_cpp import Llama

        _silence_llama_logs()
        return Llama(model_path=str(profile.model_path or embedded_model_path(profile.model)), vocab_only=True,
                     verbose=False)
    except Exception:
        return None


def _render_chat(llm, messages: list[dict[str, str]]) -> tuple[str, bool]:
    """``messages`` through the model's own chat template (its GGUF's), the assistant's turn opened: the
    text, and whether the template wrote the BOS token itself."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text_of(token: int) -> str:
        return llm._model.token_get_text(token) if token != -1 else ""

    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                                    eos_token=text_of(llm.token_eos()), bos_token=text_of(llm.token_bos()))
    rendered = formatter(messages=messages)
    return rendered.prompt, bool(rendered.added_special)


class LocalBackend(LMBackend):
    name = "local"
    free = True
    chat_logprobs = True
    # llama.cpp's server applies repeat_penalty 1.1 by default; this backend decodes with 1.0
    export_extra_body = MappingProxyType({"repeat_penalty": 1.0})

    @classmethod
    def token_counter(cls, profile: LMProfile) -> Callable[[str], int] | None:
        """llama.cpp's count (BOS + text, special tokens parsed) from the GGUF's vocabulary only, no weights."""
        vocab = _vocabulary(profile)
        if vocab is None:
            return None
        return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    @classmethod
    def chat_renderer(cls, profile: LMProfile) -> Callable[[list[dict[str, str]]], str] | None:
        """The GGUF's own chat template, read from its vocabulary only (no weights); None without one."""
        vocab = _vocabulary(profile)
        if vocab is None or not vocab.metadata.get("tokenizer.chat_template"):
            return None
        return lambda messages: _render_chat(vocab, messages)[0]

    def __init__(self, profile: LMProfile, cache: ResponseCache | None = None):
        super().__init__(profile, cache)
        self._llm = None
        self._call_lock = threading.Lock()
        if profile.model_path:
            path = Path(os.path.expanduser(profile.model_path))
            if not path.exists():
                raise ConfigError(f"model file not found: {path}", file=profile.source, field="model_path",
                                  fix="point model_path at a GGUF file or remove it to use the embedded model")
            self._path = path
        else:
            self._path = None
        self._model_id = None

    @property
    def model_path(self) -> Path:
        if self._path is None:
            self._path = embedded_model_path(self.profile.model)
        return self._path

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            p = self.model_path
            # name + size + head hash: cheap, and changes when the weights change
            with open(p, "rb") as fh:
                head = hashlib.sha256(fh.read(1 << 20)).hexdigest()[:16]
            self._model_id = f"local:{self.profile.model}:{p.stat().st_size}:{head}:ctx{self.profile.n_ctx}"
        return self._model_id

    def _load(self):
        if self._llm is None:
            from llama_cpp import Llama

            _silence_llama_logs()
            threads = self.profile.n_threads or max(1, min(os.cpu_count() or 1, 8))
            self._llm = Llama(model_path=str(self.model_path), n_ctx=self.profile.n_ctx, n_threads=threads,
                              n_threads_batch=threads, n_batch=self.profile.n_batch, seed=0, verbose=False,
                              logits_all=False)
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        return self._load().tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def _generate(self, request: LMRequest) -> LMResponse:
        with self._call_lock:
            llm = self._load()
            common = dict(max_tokens=request.max_tokens, temperature=request.temperature,
                          stop=list(request.stop) or None, seed=request.sample,
                          top_k=0 if request.temperature == 0 else 40, top_p=1.0, repeat_penalty=1.0)
            try:
                if request.prompt is not None:
                    n_prompt = len(self.tokenize(request.prompt))
                    if n_prompt + request.max_tokens > self.profile.n_ctx:
                        raise LMError(f"prompt of {n_prompt} tokens does not fit the context of {self.profile.n_ctx}",
                                      file=self.profile.source, field="n_ctx",
                                      fix="raise n_ctx in the LM profile or use fewer/shorter demos")
                    out = llm.create_completion(request.prompt, **common)
                    choice = out["choices"][0]
                    text = choice["text"]
                    lp = self._first_token_logprobs(llm, request.prompt, request.logprobs) if request.logprobs else None
                elif request.logprobs:
                    return self._chat_readout(llm, request)
                else:
                    msgs = [{"role": r, "content": c} for r, c in request.messages or ()]
                    out = llm.create_chat_completion(msgs, **common)
                    choice = out["choices"][0]
                    text = choice["message"]["content"] or ""
                    lp = None
            except LMError:
                raise
            except Exception as exc:
                raise LMError(f"llama.cpp failed: {type(exc).__name__}: {exc}", file=self.profile.source,
                              field="model", fix="check the model file and the prompt size") from None
            usage = out.get("usage") or {}
            return LMResponse(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              finish_reason=choice.get("finish_reason"), logprobs=lp)

    def _chat_readout(self, llm, request: LMRequest) -> LMResponse:
        """A chat label readout: the messages through the model's own chat template, the assistant's reply
        opened with ``answer_prefix`` (the adapter's header), and the top-k of the next token, the answer's
        first. No token is generated; the text is the most likely next token."""
        if not llm.metadata.get("tokenizer.chat_template"):
            raise LMError(f"{self.model_path.name} has no chat template", file=self.profile.source, field="adapter",
                          fix="use adapter: completion for this model")
        prompt, added_special = _render_chat(llm, [{"role": r, "content": c} for r, c in request.messages or ()])
        text = prompt + (request.answer_prefix or "")
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=not added_special, special=True)
        if len(tokens) + 1 > self.profile.n_ctx:
            raise LMError(f"prompt of {len(tokens)} tokens does not fit the context of {self.profile.n_ctx}",
                          file=self.profile.source, field="n_ctx",
                          fix="raise n_ctx in the LM profile or use fewer/shorter demos")
        top = self._top_after(llm, tokens, request.logprobs or 1)
        return LMResponse(text=max(top, key=top.get) if top else "", prompt_tokens=len(tokens), completion_tokens=0,
                          finish_reason="length", logprobs=[top])

    def _top_after(self, llm, tokens: list[int], k: int) -> dict[str, float]:
        """Top-k log-probabilities of the token after ``tokens``, evaluated over the KV cache's longest
        shared prefix (one row of logits: ``logits_all`` stays off)."""
        shared = min(llm.longest_token_prefix(llm._input_ids[:llm.n_tokens], tokens), len(tokens) - 1)
        llm.n_tokens = shared  # eval drops the KV cache from here on
        llm.eval(tokens[shared:])
        return self._top_of_logits(llm, tokens, k)

    def _top_of_logits(self, llm, tokens: list[int], k: int) -> dict[str, float]:
        import numpy as np

        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        logp = logits - np.log(np.exp(logits).sum())
        out: dict[str, float] = {}
        for t in np.argsort(-logp)[:k]:
            piece = llm.detokenize([int(t)], prev_tokens=tokens).decode("utf-8", errors="replace")
            out.setdefault(piece, float(logp[t]))
        return out

    def _first_token_logprobs(self, llm, prompt: str, k: int) -> list[dict[str, float]]:
        """Top-k log-probabilities of the first generated token.

        llama-cpp-python only returns logprobs with logits_all=True, which holds n_ctx x vocab
        floats (4 GB for Gemma's 262k vocabulary at n_ctx 4096). Instead: re-evaluate the
        prompt's last token (its prefix stays in the KV cache) and read that one row of logits.
        """
        return [self._top_after(llm, self.tokenize(prompt), k)]

    def close(self) -> None:
        if self._llm is not None:
            try:
                self._llm.close()
            except Exception:
                pass
            self._llm = None


def _smoke() -> int:
    """Assemble the embedded model and decode a few tokens (run in a subprocess by scripts/setup.sh)."""
    from .profiles import LMProfile

    backend = LocalBackend(LMProfile(name="local", backend="local", n_ctx=512))
    out = backend.complete(LMRequest(prompt="Review: a fine film\nSentiment:", max_tokens=2))
    backend.close()
    print(f"embedded model ok: {backend.model_path.name} answered {out.text!r}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--smoke" in sys.argv:
        sys.exit(_smoke())
