"""The face-attribute plug-in interface of the analysis stage.

An attribute (mask, fever, ...) reads the aligned full-resolution face crops of one
face tracklet in one GOP, plus whatever side input it gathered for that GOP (the
paired thermal frames, for fever), and returns one :class:`Reading`: a value and a
confidence, or "no reading". The analysis stage runs the attributes switched on for
the camera; the sink, which sees each camera's GOPs in order, folds the readings of a
track's tracklets with :meth:`FaceAttribute.follow` (where per-track alerting with
hysteresis lives). One file per attribute, its settings beside its class, found
through the one registry in :mod:`framepipe.stages.analysis.attributes`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from nats.js import JetStreamContext

from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.settings import Settings

Box = tuple[float, float, float, float]
#: what a reading's value can be: a label ("worn") or a number (37.9 °C).
Value = str | float
#: a track's per-attribute state the sink keeps between GOPs (JSON: it is persisted).
TrackState = Mapping[str, float | str | bool]


@dataclass(frozen=True)
class FaceSample:
    """One aligned face of a tracklet, as the embedder cut it from the full-resolution frame."""

    #: the frame's index in the camera and its presentation time (seconds, the GOP's clock).
    frame: int
    pts: float
    #: the detection box and dlib's 5 landmarks (eye corners 0-1 and 2-3, nose 4), in the
    #: full-resolution frame's pixels.
    box: Box
    landmarks: npt.NDArray[np.float32]
    #: the aligned 150×150 RGB chip (dlib's ``get_face_chip``, 25 % padding).
    chip: npt.NDArray[np.uint8]
    #: the frame's size (width, height) in pixels.
    frame_size: tuple[int, int]


@dataclass(frozen=True)
class Reading:
    """One attribute's verdict on one tracklet: ``value`` None means "no reading"."""

    value: Value | None
    confidence: float = 0.0

    @property
    def present(self) -> bool:
        return self.value is not None


NO_READING = Reading(None, 0.0)


@dataclass(frozen=True)
class Followed:
    """What the sink keeps for a track after one more reading, and the alert it raises now."""

    state: TrackState
    #: the EVENTS type to emit now (e.g. ``alert.fever``), once; None: nothing to say.
    alert: str | None = None


SideInput = TypeVar("SideInput")


class FaceAttribute(ABC, Generic[SideInput]):
    """A face attribute: its name, its models (loaded once per process), its readings."""

    #: the registry key, the config name (``analysis.attributes``) and the field name in
    #: DETECTIONS, EVENTS and detections.jsonl.
    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: the camera whose tracks this instance follows (the sink keeps one per camera and
        #: sets it, for per-camera alerts); empty in the analysis stage.
        self.camera = ""

    def load(self) -> None:
        """Load models (runs once, in a worker thread, before the first GOP). Default: none."""

    async def gather(self, js: JetStreamContext, item: EncodeItem, gop: GopMessage) -> SideInput | None:
        """Fetch this GOP's side input (e.g. the paired thermal frames). Default: none."""
        return None

    @abstractmethod
    def read(self, samples: Sequence[FaceSample], side: SideInput | None) -> Reading:
        """The tracklet's reading from its aligned crops (runs in a worker thread)."""

    def follow(self, state: TrackState, reading: Reading) -> Followed:
        """Fold one more tracklet's reading into the track's state (the sink, in GOP order).

        The sink calls it for each analysed tracklet of the track, with :data:`NO_READING`
        when this tracklet has none of an attribute the track had. Default: keep the last
        present reading, raise nothing."""
        if not reading.present:
            return Followed(state)
        return Followed(
            {"value": reading.value if reading.value is not None else "", "confidence": reading.confidence}
        )

    def current(self, state: TrackState) -> Reading:
        """The track's value as EVENTS show it, from its state. Default: the state's
        ``value`` and ``confidence`` keys (what the default :meth:`follow` keeps)."""
        value = state.get("value")
        if value is None or isinstance(value, bool) or value == "":
            return NO_READING
        confidence = state.get("confidence", 0.0)
        return Reading(value, float(confidence) if isinstance(confidence, int | float) else 0.0)
