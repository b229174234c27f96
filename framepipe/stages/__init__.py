"""The stages: one small class each, found through the topology table's ``entry``."""

from __future__ import annotations

import importlib
from typing import Any

from framepipe.core.errors import ConfigError
from framepipe.core.runner import Stage
from framepipe.core.settings import Settings
from framepipe.core.topology import StageSpec


def load_stages(spec: StageSpec, settings: Settings) -> list[Stage[Any]]:
    """The stage objects of one process of ``spec`` (the sink runs two consumers in one)."""
    module_name, _, attribute = spec.entry.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"stage {spec.name!r} has no entry point (it runs per camera)")
    factory = getattr(importlib.import_module(module_name), attribute)
    made = factory(settings)
    stages = list(made) if isinstance(made, list | tuple) else [made]
    if not stages or not all(isinstance(stage, Stage) for stage in stages):
        raise ConfigError(f"{spec.entry} made {made!r}, not stages")
    return stages
