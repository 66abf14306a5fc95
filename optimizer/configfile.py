"""Config files: YAML read into a mapping, and pydantic errors turned into one-line ConfigErrors.

Shared by task files (``optimizer.task``), optimizer presets and LM profiles
(``optimizer.lm.profiles``): each error names the file, the dotted field and a
fix, and an unknown key suggests the closest allowed one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .registry import Registry

#: the repository's ``configs/`` (LM profiles, optimizer presets, prices)
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def read_yaml(path: Path, *, what: str = "task file") -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{what} not found", file=str(path), fix="check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("file is not UTF-8 text", file=str(path), fix="save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"malformed YAML: {problem}", file=str(path), field=where,
                          fix="correct the YAML syntax at that position") from None
    if data is None:
        raise ConfigError("file is empty", file=str(path), fix=f"write a {what} mapping")
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", file=str(path),
                          fix="start the file with `key: value` lines")
    return data


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The allowed keys at `loc` (for 'did you mean' suggestions)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(str(part))
        if field is None:
            return []
        ann = field.annotation
        current = None
        for cand in getattr(ann, "__args__", ()) + (ann,):
            inner = getattr(cand, "__args__", ())
            for c in (cand,) + tuple(inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
                    break
            if current is not None:
                break
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items() if not name.startswith("_")]


def validation_error_to_config_error(exc: ValidationError, file: str, model: type[BaseModel]) -> ConfigError:
    """The first pydantic error as one ConfigError with file, dotted field and fix."""
    errors = exc.errors()
    # a typo shows up as an unknown key *and* a missing one: the unknown key is the cause
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = tuple(err.get("loc", ()))
    field = ".".join(str(p) for p in loc) or None
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    if kind == "extra_forbidden":
        allowed = _model_fields(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if allowed else []
        fix = f"did you mean `{close[0]}`?" if close else (
            f"remove it; allowed keys here: {', '.join(allowed)}" if allowed else "remove it")
        return ConfigError("unknown key", file=file, field=field, fix=fix)
    if kind == "missing":
        return ConfigError("required key is missing", file=file, field=field, fix="add it")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return ConfigError(f"invalid value {err.get('input')!r}", file=file, field=field,
                           fix=f"use one of {expected}")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ConfigError(msg, file=file, field=field, fix="see the task file reference in README.md")


def registered(registry: Registry, where: Callable[[type], bool] | None = None) -> Any:
    """A ``str`` field that takes the names ``registry`` holds (those ``where(cls)`` accepts, if given).

    An unknown name is the same error a ``Literal`` of the names gives, so a task file's error reads
    ``invalid value 'x' (fix: use one of 'a', 'b' or 'c')`` whichever names are registered."""

    def check(value: Any) -> Any:
        names = registry.names() if where is None else tuple(n for n, cls in registry.items() if where(cls))
        if not isinstance(value, str) or value not in names:
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": registry.expected(names)})
        return value

    return Annotated[str, BeforeValidator(check)]
