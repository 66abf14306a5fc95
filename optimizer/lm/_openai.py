"""The ``openai`` backend: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

``api: completions`` uses ``/v1/completions`` (raw prompts, for base models);
``api: chat`` uses ``/v1/chat/completions``. The key comes from the environment
variable the profile names in ``api_key_env``; it is never logged or stored,
and error messages name the variable, not the value.

The openai client's own retries are off (``max_retries=0``): transient failures
(429 with ``Retry-After``, 5xx, timeouts, dropped connections, malformed JSON)
become ``RetryableError`` and the retry loop in ``LMBackend.complete`` owns the
back-off, the adaptive concurrency limit and the failure accounting. Calls may
overlap (``concurrent = True``): the client's connection pool is thread-safe.
"""

from __future__ import annotations

import os

from ..errors import ConfigError, LMAuthError, LMCallFailed, LMConnectionError, LMError, RetryableError
from ..plain_client import answer_top, chat_positions
from .base import LMBackend, LMRequest, LMResponse, parse_retry_after
from .cache import ResponseCache
from .profiles import LMProfile


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class OpenAIBackend(LMBackend):
    name = "openai"
    concurrent = True
    serves_openai_api = True
    chat_logprobs = True

    @classmethod
    def default_adapter(cls, profile: LMProfile) -> str:
        return "chat" if profile.api == "chat" else "completion"

    @classmethod
    def check_profile(cls, profile: LMProfile, file: str | None) -> None:
        if not profile.base_url:
            raise ConfigError("an openai profile needs base_url", file=file, field="base_url",
                              fix="set base_url, e.g. http://127.0.0.1:8080/v1")

    def __init__(self, profile: LMProfile, cache: ResponseCache | None = None):
        super().__init__(profile, cache)
        import openai

        self._key: str | None = None
        if profile.api_key_env:
            self._key = os.environ.get(profile.api_key_env)
            if not self._key:
                raise ConfigError(f"environment variable {profile.api_key_env} is not set", file=profile.source,
                                  field="api_key_env", fix=f"export {profile.api_key_env}=<your key>")
        self._client = openai.OpenAI(base_url=profile.base_url, api_key=self._key or "no-key",
                                     timeout=profile.timeout, max_retries=0)

    @property
    def model_id(self) -> str:
        top = f":top{self.profile.top_logprobs}" if self.profile.top_logprobs != 20 else ""  # it moves label readouts
        return f"openai:{self.profile.base_url}:{self.profile.model}:{self.profile.api}{top}"

    def _generate(self, request: LMRequest) -> LMResponse:
        import openai

        common = {"model": self.profile.model, self.profile.max_tokens_field: request.max_tokens,
                  "temperature": request.temperature}
        top_k = min(request.logprobs, self.profile.top_logprobs) if request.logprobs else None
        if request.stop:
            common["stop"] = list(request.stop)[:4]
        if request.temperature > 0:
            common["seed"] = request.sample
        try:
            if request.prompt is not None:
                if self.profile.api == "chat":
                    msgs = [{"role": "user", "content": request.prompt}]
                    return self._chat(msgs, request, common, top_k)
                out = self._client.completions.create(prompt=request.prompt, logprobs=top_k, **common)
                choice = out.choices[0]
                lp = None
                if request.logprobs and choice.logprobs is not None and choice.logprobs.top_logprobs:
                    lp = [dict(d) for d in choice.logprobs.top_logprobs]
                usage = out.usage
                return LMResponse(text=choice.text or "", prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                                  completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                                  finish_reason=choice.finish_reason, logprobs=lp)
            msgs = [{"role": r, "content": c} for r, c in request.messages or ()]
            return self._chat(msgs, request, common, top_k)
        except openai.AuthenticationError:
            raise LMAuthError(f"{self.profile.base_url} refused the API key", file=self.profile.source,
                              field="api_key_env",
                              fix=f"check the key in ${self.profile.api_key_env or 'OPENAI_API_KEY'}") from None
        except openai.PermissionDeniedError:
            raise LMAuthError(f"{self.profile.base_url} denied access to model {self.profile.model}",
                              file=self.profile.source, field="model", fix="check the model name and key") from None
        except openai.RateLimitError as exc:
            raise self._transient("rate_limit", "returned HTTP 429 (rate limited)",
                                  parse_retry_after(getattr(exc.response, "headers", None))) from None
        except openai.APITimeoutError:
            raise self._transient("timeout", f"timed out after {self.profile.timeout:g}s") from None
        except openai.APIConnectionError as exc:
            import httpx

            if isinstance(exc.__cause__, httpx.ConnectError):
                final = LMConnectionError(f"endpoint {self.profile.base_url} is unreachable", file=self.profile.source,
                                          field="base_url", fix="start the server or correct base_url")
                raise RetryableError(final, kind="connect") from None
            raise self._transient("dropped", "dropped the connection") from None
        except openai.NotFoundError:
            raise LMError(f"{self.profile.base_url} has no model {self.profile.model!r} or no {self.profile.api} API",
                          file=self.profile.source, field="model", fix="check model and api in the profile") from None
        except openai.APIStatusError as exc:
            code = exc.status_code
            if code >= 500 or code in (408, 409):
                raise self._transient("server", f"returned HTTP {code}",
                                      parse_retry_after(getattr(exc.response, "headers", None))) from None
            msg = _scrub(str(getattr(exc, "message", exc)), self._key)[:200]
            raise LMError(f"endpoint returned HTTP {code}: {msg}", file=self.profile.source,
                          field="base_url", fix="check the request parameters and the server logs") from None
        except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
            # a 200 whose body is not the JSON we expect (truncated, HTML, empty choices)
            raise self._transient("malformed", f"sent a malformed response ({type(exc).__name__})") from None
        except openai.OpenAIError as exc:
            raise LMError(f"OpenAI client error: {_scrub(str(exc), self._key)[:200]}", file=self.profile.source,
                          field="base_url", fix="check the endpoint") from None

    def _transient(self, kind: str, what: str, retry_after: float | None = None) -> RetryableError:
        final = LMCallFailed(f"endpoint {self.profile.base_url} {what}; gave up after retries",
                             file=self.profile.source, field="base_url",
                             fix="lower --concurrency, raise max_retries or timeout in the profile, or retry later")
        return RetryableError(final, kind=kind, retry_after=retry_after)

    def _chat(self, msgs: list[dict], request: LMRequest, common: dict, top_k: int | None) -> LMResponse:
        """A chat call; with ``logprobs`` the one top-k of the answer's first token (``answer_top``)."""
        if top_k:
            common = {**common, "logprobs": True, "top_logprobs": top_k}
        out = self._client.chat.completions.create(messages=msgs, **common)
        choice = out.choices[0]
        usage = out.usage
        lp = [answer_top(chat_positions(choice.logprobs), request.answer_prefix or "")] if top_k else None
        return LMResponse(text=choice.message.content or "", prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                          finish_reason=choice.finish_reason, logprobs=lp)

    def preflight(self) -> None:
        """GET /models: unreachable endpoints and refused keys fail here, before any paid call."""
        import httpx
        import openai

        for attempt in range(2):
            try:
                self._client.with_options(timeout=min(10.0, self.profile.timeout)).models.list()
                return
            except openai.AuthenticationError:
                raise LMAuthError(f"{self.profile.base_url} refused the API key", file=self.profile.source,
                                  field="api_key_env",
                                  fix=f"check the key in ${self.profile.api_key_env or 'OPENAI_API_KEY'}") from None
            except openai.APIConnectionError as exc:
                if attempt == 0 and not isinstance(exc, openai.APITimeoutError):
                    import time

                    time.sleep(0.5)
                    continue
                kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "is unreachable"
                if not isinstance(exc.__cause__, (httpx.ConnectError, httpx.TimeoutException)):
                    return  # it answered something: let the real calls and their retries judge
                raise LMConnectionError(f"endpoint {self.profile.base_url} {kind}", file=self.profile.source,
                                        field="base_url", fix="start the server or correct base_url") from None
            except Exception:
                return  # no /models on this server, or a transient error: the calls will tell

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass
