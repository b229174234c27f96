"""Detector plug-ins: one module per model family, found through one registry.

``inference.model`` names a family (the settings map the older BlazeFace names
``full_range``/``short_range`` to ``blazeface-full``/``blazeface-short``);
:func:`build_detector` looks up the plug-in that answers to it, derives the
plug-in's own config from :class:`~framepipe.core.settings.InferenceSettings`,
starts the configured backend and hands both to the plug-in's factory.

To add a family:

1. Write ``detectors/<family>.py`` with a frozen config dataclass (it needs an
   ``input_size``) built from ``InferenceSettings``, the pre/post-processing, a
   class satisfying :class:`~.base.Detector`, and
   ``PLUGIN = DetectorPlugin(families=(...), config_from=..., factory=...)``.
   Detections are :class:`~.base.RawDetection` boxes in letterboxed model pixels.
2. Import the module below and pass its ``PLUGIN`` to :func:`register`.
3. Make the family selectable in ``core/settings/stages.py``, which validates
   ``inference.model`` when settings load: its name in ``InferenceSettings.model``,
   ``_MODEL_ALIASES`` and the ``family`` type, its size in ``input_size``. New keys
   it reads go in ``InferenceSettings`` too, so TOML and ``FRAMEPIPE_INFERENCE__*``
   variables reach it like every other setting.
"""

from __future__ import annotations

from typing import Any

from framepipe.core.errors import ConfigError
from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.backends import backend_info, create_backend
from framepipe.stages.inference.contract import InferenceBackend
from framepipe.stages.inference.detectors import blazeface, yolo
from framepipe.stages.inference.detectors.base import Detector, DetectorConfig, DetectorPlugin, RawDetection

__all__ = [
    "Detector",
    "DetectorConfig",
    "DetectorPlugin",
    "RawDetection",
    "build_detector",
    "families",
    "plugin_for",
    "register",
]

# Plug-ins differ in their config type; each one is checked where it is built.
_PLUGINS: dict[str, DetectorPlugin[Any]] = {}


def register(plugin: DetectorPlugin[Any]) -> DetectorPlugin[Any]:
    """Make ``plugin`` answer to its families; a family already taken is a programming error."""
    taken = [family for family in plugin.families if family in _PLUGINS]
    if taken:
        raise ValueError(f"detector families already registered: {', '.join(taken)}")
    for family in plugin.families:
        _PLUGINS[family] = plugin
    return plugin


def families() -> tuple[str, ...]:
    """Every registered family, in registration order."""
    return tuple(_PLUGINS)


def plugin_for(family: str) -> DetectorPlugin[Any]:
    """The plug-in for ``family``; an unknown one is a ConfigError naming ``inference.model``."""
    try:
        return _PLUGINS[family]
    except KeyError:
        known = ", ".join(repr(name) for name in families())
        raise ConfigError(f"inference.model must be one of {known}, got {family!r}") from None


def _check_input_size(
    backend: InferenceBackend, cfg: InferenceSettings, input_size: int, setting: str
) -> None:
    """A fixed model input that differs from what the decoder sends fails every message: fail now."""
    shape = backend.input_shape
    if len(shape) != 4:
        return
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and (height, width) != (input_size,) * 2:
        raise ConfigError(
            f"model {cfg.model_path} takes {width}x{height} images but frames are "
            f"{input_size}x{input_size}: set inference.{setting} to match"
        )


def per_call_batch(cfg: InferenceSettings, backend: InferenceBackend) -> int:
    """Frames per model call: ``max_batch`` on a GPU, at most ``cpu_max_batch`` on the CPU."""
    if backend_info(backend).device != "cpu":
        return cfg.max_batch
    return min(cfg.max_batch, cfg.cpu_max_batch)


def build_detector(cfg: InferenceSettings) -> Detector:
    """The detector plug-in that ``inference.model`` names, on the configured backend."""
    plugin = plugin_for(cfg.family)
    config: DetectorConfig = plugin.config_from(cfg)
    if plugin.model_file_hint is not None and not cfg.model_path.is_file():
        raise ConfigError(f"inference.model_file {cfg.model_path} does not exist: {plugin.model_file_hint}")
    backend = create_backend(cfg)
    try:
        _check_input_size(backend, cfg, config.input_size, plugin.input_size_setting)
    except ConfigError:
        backend.close()
        raise
    return plugin.factory(backend, config, per_call_batch(cfg, backend))


# The built-in families; a new family's module is imported above and registered here.
register(blazeface.PLUGIN)
register(yolo.PLUGIN)
