"""Model registry: an architecture name -> factory(args, loss, ctx).

Each model module registers itself with ``@register("name")``; ``load_all()`` imports every
module in this package so that params.yaml can refer to any of them by name.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from ..errors import InpaintBenchError
from .base import BuildContext

_FACTORIES: dict[str, Callable] = {}
_LOADED = False


def register(name: str):
    def deco(factory: Callable):
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise RuntimeError(f"architecture {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return deco


def load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    from .. import models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in {"base", "registry", "layers"}:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED = True


def architectures() -> list[str]:
    load_all()
    return sorted(_FACTORIES)


def is_learned(arch: str) -> bool:
    """Whether the architecture trains (classical methods mark their factory ``learned = False``)."""
    load_all()
    return getattr(_FACTORIES[arch], "learned", True)


def build(arch: str, args: dict | None = None, loss: dict | None = None, ctx: BuildContext | None = None):
    load_all()
    if arch not in _FACTORIES:
        raise InpaintBenchError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_FACTORIES))}")
    try:
        return _FACTORIES[arch](dict(args or {}), dict(loss or {}), ctx or BuildContext())
    except TypeError as exc:
        raise InpaintBenchError(f"bad args for architecture {arch!r}: {exc}") from exc
