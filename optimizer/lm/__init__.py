"""LM backends behind one interface (``LMBackend.complete``), with a registry.

``BACKENDS`` maps a profile's ``backend:`` to its implementation; a new backend
is one private module and one line here, and runs the conformance tests in
``tests/test_lm_conformance.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import LMBackend, LMRequest, LMResponse, Usage
from .cache import ResponseCache, default_cache_dir
from .profiles import LMProfile, load_profile

BACKENDS = {
    "local": "optimizer.lm._local:LocalBackend",
    "openai": "optimizer.lm._openai:OpenAIBackend",
}


def create_backend(profile: LMProfile, *, cache: ResponseCache | None | bool = True) -> LMBackend:
    """Instantiate the backend a profile names. ``cache=True`` uses the default cache file."""
    module, _, cls = BACKENDS[profile.backend].partition(":")
    backend_cls = getattr(importlib.import_module(module), cls)
    if cache is True:
        cache = ResponseCache(default_cache_dir() / "lm-cache.sqlite")
    elif cache is False:
        cache = None
    return backend_cls(profile, cache)


__all__ = ["BACKENDS", "LMBackend", "LMProfile", "LMRequest", "LMResponse", "ResponseCache", "Usage",
           "create_backend", "default_cache_dir", "load_profile", "Path"]
