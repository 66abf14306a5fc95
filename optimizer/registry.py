"""A registry of named implementations: the extension points' one mechanism.

Each extension point (LM backends, demo selectors, instruction proposers,
metrics; see ``optimizer.plugins``) is a ``Registry`` of classes, each under the
name a task file or LM profile uses. An entry is a class or a lazy
``"module:Class"`` path, imported on first use, so a registry can name heavy
or dependent implementations without importing them (the task schema checks
names against the registries before any implementation is loaded).

What an implementation can do is said by class attributes (capabilities,
e.g. ``DemoSelector.makes_lm_calls``), never by comparing names.
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to classes, in registration order (the order errors and help list them in).

    ``kind`` says what is registered ("demo selector"); ``field`` is the key a user
    writes the name under, for errors (``optimizer.selectors``); ``base`` (a class or a
    lazy path) is the abstract base every entry must subclass, checked on load."""

    def __init__(self, kind: str, *, field: str | None = None, base: type | str | None = None):
        self.kind = kind
        self.field = field
        self._base = base
        self._entries: dict[str, type[T] | str] = {}

    def register(self, name: str, target: type[T] | str) -> None:
        """Add ``target`` (a class or ``"module:Class"``) under ``name``; a name is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"a lazy {self.kind} is 'module:Class', got {target!r}")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def get(self, name: str) -> type[T]:
        """The class registered as ``name`` (imported now if lazy). Unknown: ConfigError listing the names."""
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise ConfigError(f"unknown {self.kind} {name!r}", field=self.field,
                              fix=f"use one of {', '.join(self._entries)}")
        if isinstance(entry, str):
            entry = _load(entry)
            base = _load(self._base) if isinstance(self._base, str) else self._base
            if base is not None and not (isinstance(entry, type) and issubclass(entry, base)):
                raise TypeError(f"{self.kind} {name!r} ({self._entries[name]}) is not a {base.__name__}")
            self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, type[T]]]:
        """(name, class) pairs, loading every entry."""
        for name in self.names():
            yield name, self.get(name)

    def expected(self, names: tuple[str, ...] | None = None) -> str:
        """The names as pydantic lists a Literal's values (``'a', 'b' or 'c'``): errors read as they did
        when the task schema spelled the names out as ``Literal[...]`` types."""
        quoted = [repr(n) for n in (self.names() if names is None else names)]
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def _load(path: str) -> type:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
