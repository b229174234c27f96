"""Face attributes of the analysis stage: one module per attribute, one registry.

An attribute module defines its class (a :class:`~.base.FaceAttribute`) and decorates
it with :func:`register`; listing the module in ``_MODULES`` is all it takes to make
its name valid in ``analysis.attributes``.
"""

from __future__ import annotations

import importlib
from typing import Any

from framepipe.core.errors import ConfigError
from framepipe.stages.analysis.attributes.base import FaceAttribute

_REGISTRY: dict[str, type[FaceAttribute[Any]]] = {}
#: the attribute modules, imported on first lookup (their models load only in ``load()``).
_MODULES: tuple[str, ...] = ("fever", "mask")


def register(cls: type[FaceAttribute[Any]]) -> type[FaceAttribute[Any]]:
    """Class decorator: make ``cls.name`` a valid attribute name."""
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[FaceAttribute[Any]]]:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def attribute_class(name: str) -> type[FaceAttribute[Any]]:
    known = registry()
    if name not in known:
        raise ConfigError(f"unknown face attribute {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return known[name]
