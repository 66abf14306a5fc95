"""A DSPy LM engine over our backends, so DSPy programs (and DSPy's own optimizers) call
the LM through ``LMBackend.complete``: same cache, same counters.

    lm = dspy_lm(backend)                      # dspy.LM(engine=BackendEngine(backend))
    with dspy.context(lm=lm, adapter=CompletionAdapter()):
        program(sentence="...")

For a completion backend the engine sends the messages' text as one raw prompt
(``CompletionAdapter`` produces exactly one user message); for a chat backend it
sends the messages.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from .base import LMBackend, LMRequest


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(getattr(p, "text", "") or "" for p in content or ())


class BackendEngine:
    """``complete(Request) -> Response`` over an ``LMBackend`` (DSPy 3.4 engine contract)."""

    def __init__(self, backend: LMBackend, *, completion: bool | None = None, default_max_tokens: int = 64):
        self.backend = backend
        self.completion = backend.profile.resolved_adapter == "completion" if completion is None else completion
        self.default_max_tokens = default_max_tokens

    def _request(self, request: Any) -> LMRequest:
        cfg = request.config
        msgs: list[tuple[str, str]] = []
        if request.system is not None:
            msgs.append(("system", _text(request.system)))
        for m in request.messages:
            msgs.append((m.role, m.text or ""))
        common = dict(max_tokens=cfg.max_tokens or self.default_max_tokens, temperature=cfg.temperature or 0.0,
                      stop=tuple(cfg.stop or ()), sample=cfg.seed or 0)
        if self.completion:
            prompt = "\n\n".join(c for _, c in msgs if c)
            return LMRequest(prompt=prompt, **common)
        return LMRequest(messages=tuple(msgs), **common)

    def complete(self, request: Any) -> Response:
        resp = self.backend.complete(self._request(request))
        return Response(id=None, model=self.backend.profile.model, message=Message.assistant([TextPart(resp.text)]),
                        finish_reason="stop" if resp.finish_reason in (None, "stop") else "length",
                        usage=Usage(input_tokens=resp.prompt_tokens, output_tokens=resp.completion_tokens))

    def stream(self, request: Any):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def dspy_lm(backend: LMBackend, **kwargs: Any) -> dspy.LM:
    """A ``dspy.LM`` whose every call goes through ``backend`` (DSPy's own cache off: ours is on)."""
    engine = BackendEngine(backend)
    return dspy.LM(model=f"optimizer/{backend.profile.name}", engine=engine, cache=False, num_retries=0,
                   temperature=backend.profile.temperature, **kwargs)
