"""LM backends behind one interface (``LMBackend.complete``), with a registry.

``BACKENDS`` (``optimizer.plugins``) maps a profile's ``backend:`` to its
implementation; a new backend is one private module and one ``register`` line,
and runs the conformance tests in ``tests/test_conformance_backends.py``.
``backend_class(profile)`` gives the class (its capabilities: ``free``,
``serves_openai_api``, ...) without instantiating it.
"""

from __future__ import annotations

from pathlib import Path

from ..plugins import BACKENDS
from .base import LMBackend, LMRequest, LMResponse, Usage
from .cache import ResponseCache, default_cache_dir
from .profiles import LMProfile, load_profile


def backend_class(profile: LMProfile) -> type[LMBackend]:
    """The class implementing the profile's backend (imported now if lazy; the model is not loaded)."""
    return BACKENDS.get(profile.backend)


def create_backend(profile: LMProfile, *, cache: ResponseCache | None | bool = True) -> LMBackend:
    """Instantiate the backend a profile names. ``cache=True`` uses the default cache file."""
    backend_cls = backend_class(profile)
    if cache is True:
        cache = ResponseCache(default_cache_dir() / "lm-cache.sqlite")
    elif cache is False:
        cache = None
    return backend_cls(profile, cache)


__all__ = ["BACKENDS", "LMBackend", "LMProfile", "LMRequest", "LMResponse", "ResponseCache", "Usage",
           "backend_class", "create_backend", "default_cache_dir", "load_profile", "Path"]
