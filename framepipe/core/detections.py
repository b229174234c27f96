"""What the stages find in frames, as messages carry it: detections, attribute readings, tracklets.

Each type writes and checks its own wire form (``to_wire`` / ``from_wire``); the
envelope around them is :mod:`framepipe.core.envelope`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from framepipe.core.envelope import typed_fields
from framepipe.core.errors import SchemaError


@dataclass(frozen=True)
class AttributeReading:
    """One face attribute's reading (``analysis.attributes``): e.g. mask = "worn" at 0.93.

    ``value`` is a label or a number (a temperature); a face without a reading of an
    attribute simply has no entry for it ("no reading" is never a made-up value)."""

    name: str
    value: str | float
    confidence: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "confidence": round(self.confidence, 4)}

    @classmethod
    def from_wire(cls, raw: Any) -> AttributeReading:
        if not isinstance(raw, dict):
            raise SchemaError("attribute reading must be a map")
        name, value, confidence = raw.get("name"), raw.get("value"), raw.get("confidence", 0.0)
        if (
            not isinstance(name, str)
            or isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
        ):
            raise SchemaError(f"malformed attribute reading {raw!r}"[:200])
        return cls(name, value if isinstance(value, str) else float(value), float(confidence))


def attributes_map(readings: tuple[AttributeReading, ...]) -> dict[str, dict[str, Any]]:
    """The JSON form applications read: ``{"mask": {"value": "worn", "confidence": 0.93}}``."""
    return {r.name: {"value": r.value, "confidence": round(r.confidence, 4)} for r in readings}


def attributes_from_map(raw: Any) -> tuple[AttributeReading, ...]:
    if not isinstance(raw, dict):
        raise SchemaError("attributes must be a map of name to {value, confidence}")
    return tuple(AttributeReading.from_wire({"name": k, **v}) if isinstance(v, dict)
                 else AttributeReading.from_wire(v) for k, v in raw.items())  # fmt: skip


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]
    score: float
    label: str = "face"
    #: set by the analysis stage: the face's tracklet in its GOP (the sink makes it the
    #: camera's track id in detections.jsonl); -1: not analysed.
    track: int = -1
    #: set by the analysis stage: the gallery's name, ``"unknown"``, or "" (not analysed).
    identity: str = ""
    #: set by the analysis stage: the readings of the face's tracklet (``analysis.attributes``).
    attributes: tuple[AttributeReading, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "label": self.label,
        }
        if self.track >= 0:  # only analysed detections carry them: DETECTIONS stays as it was
            wire["track"] = self.track
            wire["identity"] = self.identity
        if self.attributes:
            wire["attributes"] = attributes_map(self.attributes)
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> Detection:
        if not isinstance(raw, dict):
            raise SchemaError("detection must be a map")
        box = raw.get("box")
        score = raw.get("score")
        label = raw.get("label", "face")
        track = raw.get("track", -1)
        identity = raw.get("identity", "")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int | float) for v in box)
            or not isinstance(score, int | float)
            or not isinstance(label, str)
            or not isinstance(track, int)
            or not isinstance(identity, str)
        ):
            raise SchemaError(f"malformed detection {raw!r}"[:200])
        box4 = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        attributes = attributes_from_map(raw["attributes"]) if "attributes" in raw else ()
        return cls(box4, float(score), label, track, identity, attributes)


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one source frame; ``frame`` is its index in the source."""

    frame: int
    pts: int
    detections: tuple[Detection, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"frame": self.frame, "pts": self.pts, "detections": [d.to_wire() for d in self.detections]}

    @classmethod
    def from_wire(cls, raw: Any) -> FrameDetections:
        if not isinstance(raw, dict):
            raise SchemaError("frame detections must be a map")
        frame, pts, dets = raw.get("frame"), raw.get("pts"), raw.get("detections")
        if not isinstance(frame, int) or not isinstance(pts, int) or not isinstance(dets, list):
            raise SchemaError("frame detections need int frame, int pts, list detections")
        return cls(frame, pts, tuple(Detection.from_wire(d) for d in dets))


@dataclass(frozen=True)
class FaceTracklet:
    """One face followed through one GOP by the analysis stage (``local`` is its id there).

    The sink links tracklets of consecutive GOPs into a camera's tracks (IoU of
    ``last_box`` with the next GOP's ``first_box``, else descriptor distance).
    ``embedding`` is the mean dlib descriptor of the embedded crops (128 float32,
    little-endian; empty when no crop was large enough); ``identity`` the gallery's
    vote over those crops ("" = unknown) at ``distance``.
    """

    local: int
    first_frame: int
    last_frame: int
    first_box: tuple[float, float, float, float]
    last_box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    identity: str = ""
    distance: float = -1.0
    crops: int = 0
    embedding: bytes = b""
    #: the best crop: frame index and box in it (the snapshot reference); JPEG bytes when
    #: ``analysis.keep_snapshots`` is on.
    best_frame: int = -1
    best_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    snapshot: bytes = b""
    #: the tracklet's readings of the camera's switched-on attributes (none: no reading).
    attributes: tuple[AttributeReading, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}  # fmt: skip
        wire["attributes"] = [a.to_wire() for a in self.attributes]
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> FaceTracklet:
        kwargs = typed_fields(cls, raw, "tracklet", "face tracklet must be a map", "face tracklet")
        if isinstance(kwargs.get("embedding"), memoryview):
            kwargs["embedding"] = bytes(kwargs["embedding"])
        return cls(**kwargs)
