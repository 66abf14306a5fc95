"""A loopback HTTP server for fault and latency tests of OpenAI-compatible backends.

Two modes:

- **proxy** (``upstream=URL``): forwards every request to a real server (the
  llama.cpp server in the tests) and injects faults on the way;
- **canned** (``upstream=None``): answers ``/v1/completions``,
  ``/v1/chat/completions`` and ``/v1/models`` itself, deterministically (the
  answer is a function of the prompt), after ``latency`` seconds. This is the
  "latency server" of the concurrency and worker benchmarks: it serves any
  number of calls in parallel, so what is measured is the client.

Faults, drawn per request with the given rates, or taken in order from
``script`` (a list of kinds, for exact tests). A drawn fault is a function of
``seed``, the request body and how many times that body was seen before, not of
arrival order, so a test with concurrent clients gets the same faults on every
run (each attempt of one request draws afresh):

    429       HTTP 429 with ``Retry-After: <retry_after>``
    500       HTTP 500
    slow      answer after ``slow_seconds`` (past the client's timeout)
    drop      close the connection without a response
    badjson   HTTP 200 with a truncated JSON body
    ok        no fault

``api_key`` (canned mode): requests without ``Authorization: Bearer <key>`` get 401.

In-process: ``with FaultProxy(upstream, rates={"429": 0.2}) as fp: fp.url``.
As a process: ``python tests/faultproxy.py --port 0 --latency 0.2 [--upstream URL] [--rate 429=0.2]``
prints ``URL <url>`` once it listens.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("429", "500", "slow", "drop", "badjson")
LABELS = ("positive", "negative")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away (a killed run, a timeout): not an error of the server
        super().handle_error(request, client_address)


class FaultProxy:
    def __init__(self, upstream: str | None = None, *, latency: float = 0.0, rates: dict[str, float] | None = None,
                 script: list[str] | None = None, seed: int = 0, retry_after: str | None = "0",
                 slow_seconds: float = 3.0, api_key: str | None = None, port: int = 0,
                 answers: tuple[str, ...] = LABELS):
        self.upstream = upstream.rstrip("/") if upstream else None
        self.latency = latency
        self.rates = dict(rates or {})
        self.script = list(script or [])
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.api_key = api_key
        self.answers = answers
        self.seed = seed
        self.seen: Counter = Counter()  # request-body digest -> attempts so far
        self.lock = threading.Lock()
        self.stats: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def set(self, *, rates: dict[str, float] | None = None, script: list[str] | None = None,
            latency: float | None = None) -> None:
        with self.lock:
            if rates is not None:
                self.rates = dict(rates)
            if script is not None:
                self.script = list(script)
            if latency is not None:
                self.latency = latency

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _draw(self, path: str, raw: bytes) -> str:
        with self.lock:
            if not path.endswith(("/completions",)):
                return "ok"
            if self.script:
                kind = self.script.pop(0)
            else:
                digest = hashlib.sha256(raw).hexdigest()
                attempt = self.seen[digest]
                self.seen[digest] += 1
                x = random.Random(f"{self.seed}:{digest}:{attempt}").random()
                kind = "ok"
                acc = 0.0
                for k in KINDS:
                    acc += self.rates.get(k, 0.0)
                    if x < acc:
                        kind = k
                        break
            self.stats[kind] += 1
            self.stats["requests"] += 1
            return kind

    # -- canned answers ------------------------------------------------------------------
    def canned(self, path: str, body: dict) -> dict:
        prompt = body.get("prompt")
        if prompt is None:
            prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        if isinstance(prompt, list):
            prompt = prompt[0]
        h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
        text = " " + self.answers[h % len(self.answers)]
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 1,
                 "total_tokens": max(1, len(prompt) // 4) + 1}
        common = {"id": f"cmpl-{h % 10**12}", "created": 0, "model": body.get("model", "canned"), "usage": usage}
        if path.endswith("/chat/completions"):
            return {**common, "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text.strip()}}]}
        return {**common, "object": "text_completion",
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}

    # -- the handler ---------------------------------------------------------------------
    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(n) if n else b"")

            def _serve(self, raw: bytes) -> None:
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    self._serve_inner(raw)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1

            def _serve_inner(self, raw: bytes) -> None:
                if proxy.api_key is not None and self.headers.get("Authorization") != f"Bearer {proxy.api_key}":
                    self._send(401, json.dumps({"error": {"message": "Invalid API key", "type": "invalid_request_error",
                                                          "code": "invalid_api_key"}}).encode())
                    return
                kind = proxy._draw(self.path, raw)
                if proxy.latency:
                    time.sleep(proxy.latency)
                if kind == "429":
                    headers = {"Retry-After": proxy.retry_after} if proxy.retry_after is not None else {}
                    self._send(429, json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit",
                                                          "code": "rate_limit_exceeded"}}).encode(), headers)
                    return
                if kind == "500":
                    self._send(500, json.dumps({"error": {"message": "internal error", "type": "server_error"}})
                               .encode())
                    return
                if kind == "drop":
                    self._drop()
                    return
                if kind == "badjson":
                    self._send(200, b'{"id": "cmpl-x", "object": "text_completion", "choices": [{"text": "pos')
                    return
                if kind == "slow":
                    time.sleep(proxy.slow_seconds)
                if proxy.upstream is None:
                    if self.path.rstrip("/").endswith("/models"):
                        payload = {"object": "list", "data": [{"id": "canned", "object": "model", "owned_by": "me"}]}
                    else:
                        try:
                            body = json.loads(raw or b"{}")
                        except ValueError:
                            self._send(400, b'{"error": {"message": "bad request"}}')
                            return
                        payload = proxy.canned(self.path, body)
                    self._send(200, json.dumps(payload).encode())
                    return
                self._forward(raw)

            def _forward(self, raw: bytes) -> None:
                up = urlsplit(proxy.upstream)
                path = self.path
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "content-length", "accept-encoding")}
                    conn.request(self.command, path, body=raw or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self._send(resp.status, data)
                except OSError:
                    self._drop()
                finally:
                    conn.close()

        return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--rate", action="append", default=[], help="KIND=RATE, e.g. 429=0.2")
    ap.add_argument("--retry-after", default="0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key")
    args = ap.parse_args()
    rates = {k: float(v) for k, v in (r.split("=", 1) for r in args.rate)}
    fp = FaultProxy(args.upstream, latency=args.latency, rates=rates, seed=args.seed, retry_after=args.retry_after,
                    api_key=args.api_key, port=args.port).start()
    print(f"URL {fp.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    fp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
