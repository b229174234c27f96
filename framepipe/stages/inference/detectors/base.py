"""What every detector plug-in shares: its output, its interface and its registry record.

A plug-in turns model-sized uint8 NHWC frames into the model's input and the
model's outputs back into :class:`RawDetection` lists (boxes in letterboxed
model pixels [x1, y1, x2, y2], score), so the stage is model-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.contract import InferenceBackend


@dataclass(frozen=True)
class RawDetection:
    """A box in model-input pixels (x1, y1, x2, y2) with its score and label."""

    box: tuple[float, float, float, float]
    score: float
    label: str = "face"


class Detector(Protocol):
    """What the stage needs from a plug-in: a backend and frames → detections per frame."""

    backend: InferenceBackend
    #: frames per model call.
    max_batch: int

    def detect(self, frames: npt.NDArray[np.uint8]) -> list[list[RawDetection]]: ...


class DetectorConfig(Protocol):
    """The part of a plug-in's config that the registry reads itself."""

    @property
    def input_size(self) -> int:
        """The square model input the decoder letterboxes frames to."""
        ...


ConfigT = TypeVar("ConfigT", bound=DetectorConfig)


@dataclass(frozen=True)
class DetectorPlugin(Generic[ConfigT]):
    """One detector family as the registry knows it (see ``detectors/__init__.py``)."""

    #: the ``inference.model`` families it answers to (after the settings map older aliases).
    families: tuple[str, ...]
    #: its own config, taken from the ``[inference]`` settings (pure: no files are read).
    config_from: Callable[[InferenceSettings], ConfigT]
    #: (backend, config, frames per model call) → the detector.
    factory: Callable[[InferenceBackend, ConfigT, int], Detector]
    #: the setting to change when the model's fixed input size differs from ``input_size``.
    input_size_setting: str = "model"
    #: for families whose model is the user's own export (``inference.model_file``): what
    #: to point it at; a missing file is then a ConfigError before any backend starts.
    model_file_hint: str | None = None
