"""Model registry: an architecture name -> factory(args, loss, ctx).

Each model module registers itself with ``@register("name")`` (``learned=False`` for methods that
do not train). Importing every model module costs seconds (torchvision pulls in torch._dynamo), and
every workflow step validates params.yaml, so the registry finds the names without importing: it
reads the ``@register(...)`` lines of the modules in this package, and imports a module only when
one of its architectures is built (or when ``load_all()`` is called).
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Callable

from ..errors import InpaintBenchError

_FACTORIES: dict[str, Callable] = {}
_DECLARED = re.compile(r'^@register\(\s*"([^"]+)"\s*(?:,\s*learned\s*=\s*(True|False)\s*)?\)', re.MULTILINE)
_SKIP = {"base", "registry", "layers"}
_INDEX: dict[str, tuple[str, bool]] | None = None


def register(name: str, learned: bool = True):
    def deco(factory: Callable):
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise RuntimeError(f"architecture {name!r} registered twice")
        factory.learned = learned
        _FACTORIES[name] = factory
        return factory

    return deco


def _index() -> dict[str, tuple[str, bool]]:
    """{architecture: (module name, learned)} from the source of this package's modules."""
    global _INDEX
    if _INDEX is None:
        from .. import models as pkg

        found = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name in _SKIP:
                continue
            text = (Path(pkg.__path__[0]) / f"{info.name}.py").read_text(encoding="utf-8")
            for name, learned in _DECLARED.findall(text):
                found[name] = (f"{pkg.__name__}.{info.name}", learned != "False")
        _INDEX = found
    return _INDEX


def load_all() -> None:
    for module, _ in set(_index().values()):
        importlib.import_module(module)


def architectures() -> list[str]:
    return sorted(set(_index()) | set(_FACTORIES))


def is_learned(arch: str) -> bool:
    """Whether the architecture trains (classical methods register with ``learned=False``)."""
    if arch in _FACTORIES:
        return _FACTORIES[arch].learned
    if arch in _index():
        return _index()[arch][1]
    raise InpaintBenchError(f"unknown architecture {arch!r}; known: {', '.join(architectures())}")


def factory(arch: str) -> Callable:
    if arch not in _FACTORIES and arch in _index():
        importlib.import_module(_index()[arch][0])
    if arch not in _FACTORIES:
        raise InpaintBenchError(f"unknown architecture {arch!r}; known: {', '.join(architectures())}")
    return _FACTORIES[arch]


def build(arch: str, args: dict | None = None, loss: dict | None = None, ctx=None):
    """Build `arch` with `args` and `loss` params; `ctx` is a models.base.BuildContext."""
    from .base import BuildContext

    make = factory(arch)
    try:
        return make(dict(args or {}), dict(loss or {}), ctx or BuildContext())
    except TypeError as exc:
        raise InpaintBenchError(f"bad args for architecture {arch!r}: {exc}") from exc
