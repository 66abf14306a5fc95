"""The llama.cpp server launcher: an OpenAI-compatible endpoint on loopback for the parity check.

``optimize export`` checks the artifact of a ``local`` run against the run's own GGUF model served
by llama.cpp's server with the artifact's chat template (see ``optimizer.export``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from .artifacts import CHAT_TEMPLATE
from .errors import LMConnectionError


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

