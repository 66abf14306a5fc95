"""LM profiles: which backend, model, endpoint and defaults a task uses.

A profile is a YAML file in ``configs/lm/`` (``--lm NAME``) or any path. API keys
are never stored in profiles: ``api_key_env`` names the environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..configfile import REPO_CONFIGS, registered, validation_error_to_config_error
from ..errors import ConfigError
from ..plugins import BACKENDS

BackendName = registered(BACKENDS)  # a name in optimizer.plugins.BACKENDS


class Prices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_per_1k: float = Field(default=0.0, ge=0)  # currency units per 1000 prompt tokens
    completion_per_1k: float = Field(default=0.0, ge=0)


class LMProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "local"
    backend: BackendName = "local"
    model: str = "gemma3-270m-q4_k_m"
    adapter: Literal["completion", "chat"] | None = None  # default: completion for base models / completions API
    # local (llama.cpp)
    model_path: str | None = None  # a GGUF file; default: the embedded Gemma 3 270M
    n_ctx: int = Field(default=4096, gt=0)
    n_threads: int | None = None
    n_batch: int = Field(default=512, gt=0)
    # openai-compatible
    base_url: str | None = None
    api: Literal["completions", "chat"] = "completions"
    api_key_env: str | None = None  # e.g. OPENAI_API_KEY; unset means "no key" (local servers)
    top_logprobs: int = Field(default=20, ge=1)  # the endpoint's top-k limit (OpenAI: 20; legacy completions: 5)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"  # o-series models: the latter
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    # sampling defaults
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    prices: Prices | None = None
    # set by load_profile
    source: str | None = None

    @property
    def resolved_adapter(self) -> str:
        if self.adapter:
            return self.adapter
        return BACKENDS.get(self.backend).default_adapter(self)

    def public_dict(self) -> dict:
        """What may be written to run directories and exports (no secrets, by construction)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"source"})


BUILTIN = {"local": {"name": "local", "backend": "local"}}


def profile_search_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = list(extra or [])
    dirs += [Path.cwd() / "configs" / "lm", REPO_CONFIGS / "lm"]
    return dirs


def load_profile(ref: str, *, base_dirs: list[Path] | None = None) -> LMProfile:
    """A profile by name (configs/lm/NAME.yaml) or by path; 'local' always exists."""
    import yaml

    path: Path | None = None
    candidate = Path(ref)
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        for base in [Path.cwd()] + list(base_dirs or []):
            p = candidate if candidate.is_absolute() else base / candidate
            if p.exists():
                path = p
                break
        if path is None:
            raise ConfigError(f"LM profile file not found: {ref}", field="lm",
                              fix="give a profile name from configs/lm/ or an existing path")
    else:
        for d in profile_search_dirs([b / "configs" / "lm" for b in base_dirs or []]):
            for ext in (".yaml", ".yml"):
                if (d / f"{ref}{ext}").exists():
                    path = d / f"{ref}{ext}"
                    break
            if path:
                break
    if path is None:
        if ref in BUILTIN:
            return LMProfile(**BUILTIN[ref])
        known = sorted({p.stem for d in profile_search_dirs() if d.exists() for p in d.glob("*.y*ml")} | set(BUILTIN))
        raise ConfigError(f"unknown LM profile {ref!r}", field="lm",
                          fix=f"use one of {', '.join(known)} or a path to a profile YAML")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                          fix="correct the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError("profile must be a mapping", file=str(path), fix="write `key: value` lines")
    data.setdefault("name", path.stem)
    try:
        prof = LMProfile.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, str(path), LMProfile) from None
    prof.source = str(path)
    BACKENDS.get(prof.backend).check_profile(prof, str(path))
    return prof
