"""Running the switched-on face attributes of a camera on one GOP's tracklets.

The analysis stage loads every attribute some camera uses once (``load()`` in a worker
thread at setup), then per GOP gathers each attribute's side input and reads each
tracklet's aligned crops. A failure of one attribute (its side input missing or late,
its model raising) is one log line and "no reading" for that attribute: never a wrong
value, and never a failed GOP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.js import JetStreamContext

from framepipe.core.messages import AttributeReading, EncodeItem, GopMessage
from framepipe.core.settings import Settings
from framepipe.stages.analysis.attributes import attribute_class
from framepipe.stages.analysis.attributes.base import FaceAttribute, FaceSample

log = structlog.get_logger("framepipe.analysis")


@dataclass(frozen=True)
class Gathered:
    """One attribute's side input for one GOP; ``failed``: it could not be gathered."""

    attribute: FaceAttribute[Any]
    side: Any = None
    failed: bool = False


@dataclass
class AttributeCost:
    """Seconds spent reading, and faces read, per attribute (the bench reads it)."""

    seconds: dict[str, float] = field(default_factory=dict)
    faces: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, faces: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.faces[name] = self.faces.get(name, 0) + faces


class AttributeSet:
    """The attributes an analysis replica runs: every one named by ``analysis.attributes``
    or ``analysis.camera_attributes``, each instantiated once (unknown names: one line)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.attributes: dict[str, FaceAttribute[Any]] = {
            name: attribute_class(name)(settings) for name in settings.analysis.all_attributes()
        }
        self.cost = AttributeCost()

    def load(self) -> None:
        """Load every attribute's models (a worker thread, before the first GOP)."""
        for attribute in self.attributes.values():
            attribute.load()

    def for_camera(self, camera: str) -> list[FaceAttribute[Any]]:
        return [self.attributes[name] for name in self.settings.analysis.attributes_for(camera)]

    async def gather(
        self,
        js: JetStreamContext,
        item: EncodeItem,
        gop: GopMessage,
        attributes: Sequence[FaceAttribute[Any]],
    ) -> list[Gathered]:
        out: list[Gathered] = []
        for attribute in attributes:
            try:
                out.append(Gathered(attribute, await attribute.gather(js, item, gop)))
            except Exception as exc:  # noqa: BLE001 - any failure of a plug-in is "no reading"
                log.warning(
                    "attribute.no_side_input",
                    camera=item.camera,
                    gop=item.gop,
                    attribute=attribute.name,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    action="this GOP's faces get no reading of it; check the attribute's input",
                )
                out.append(Gathered(attribute, failed=True))
        return out

    def read(
        self, camera: str, gop: int, gathered: Sequence[Gathered], samples: Mapping[int, Sequence[FaceSample]]
    ) -> dict[int, tuple[AttributeReading, ...]]:
        """Each tracklet's readings (tracklet → present readings, in the camera's order)."""
        out: dict[int, list[AttributeReading]] = {local: [] for local in samples}
        for entry in gathered:
            attribute = entry.attribute
            if entry.failed:
                continue
            started, faces = time.perf_counter(), 0
            for local, faces_of in samples.items():
                if not faces_of:
                    continue
                faces += 1
                try:
                    reading = attribute.read(faces_of, entry.side)
                except Exception as exc:  # noqa: BLE001 - a failed reading is "no reading"
                    log.warning(
                        "attribute.read_failed",
                        camera=camera,
                        gop=gop,
                        attribute=attribute.name,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        action="the face gets no reading of it; see the attribute's docs",
                    )
                    continue
                if reading.present and reading.value is not None:
                    out[local].append(
                        AttributeReading(attribute.name, reading.value, float(reading.confidence))
                    )
            self.cost.add(attribute.name, time.perf_counter() - started, faces)
        return {local: tuple(readings) for local, readings in out.items()}
