"""The message kinds of the pipeline's streams, one dataclass per step; every public name of the wire.

A stage reads and writes these: the gateway's GOPs (VIDEO), the decoder's frame
batches (FRAMES), inference's detections (DETECTIONS, with gaps), the analysis and
encode work items (ANALYZE, ENCODE) and the encoder's segments (OUTPUT). The
envelope (headers, msgpack/JSON body, raw tails, version and type checks) is
:mod:`framepipe.core.envelope`; what the stages find (detections, attribute
readings, face tracklets) is :mod:`framepipe.core.detections`. Both are
re-exported here, so ``framepipe.core.messages`` stays the one import for the wire.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import ClassVar

from framepipe.core.detections import (
    AttributeReading,
    Detection,
    FaceTracklet,
    FrameDetections,
    attributes_from_map,
    attributes_map,
)
from framepipe.core.envelope import (
    ENVELOPE_VERSION,
    JSON_CONTENT_TYPE,
    READABLE_ENVELOPE_VERSIONS,
    Headers,
    Message,
    decode,
    encode,
)
from framepipe.core.errors import SchemaError


@dataclass(frozen=True)
class Packet:
    """One demuxed packet: presentation/decode timestamps, keyframe flag, bytes."""

    pts: int
    dts: int
    keyframe: bool
    data: bytes


@dataclass(frozen=True)
class GopMessage(Message):
    """VIDEO: one closed GOP of encoded packets plus what a decoder needs."""

    KIND: ClassVar[str] = "gop"

    codec: str
    width: int
    height: int
    time_base: tuple[int, int]
    frame_offset: int
    pts: tuple[int, ...]
    dts: tuple[int, ...]
    keyframes: tuple[bool, ...]
    packets: tuple[bytes, ...]
    extradata: bytes | None = None
    captured_at: float = 0.0
    discontinuity: bool = False
    #: the source's pixel format (``gray16le``, ``rgb24``...): raw and 16-bit thermal video need it.
    pixel_format: str = ""

    def __post_init__(self) -> None:
        n = len(self.packets)
        if not (len(self.pts) == len(self.dts) == len(self.keyframes) == n) or n == 0:
            raise SchemaError("gop packets/pts/dts/keyframes must be equally long and non-empty")
        if self.time_base[0] <= 0 or self.time_base[1] <= 0:
            raise SchemaError(f"gop time_base must be positive, got {self.time_base}")

    def iter_packets(self) -> typing.Iterator[Packet]:
        for pts, dts, key, data in zip(self.pts, self.dts, self.keyframes, self.packets, strict=True):
            yield Packet(pts, dts, key, data)


@dataclass(frozen=True)
class FrameBatch(Message):
    """FRAMES: model-sized uint8 NHWC frames of one part of a GOP."""

    KIND: ClassVar[str] = "frames"
    TAIL: ClassVar[str | None] = "pixels"

    part: int
    parts: int
    video_seq: int
    frame_indices: tuple[int, ...]
    pts: tuple[int, ...]
    source_size: tuple[int, int]
    scale: float
    pad: tuple[int, int]
    shape: tuple[int, int, int, int]
    #: NHWC uint8, C order; a memoryview when decoded from the wire or built from an array.
    pixels: bytes | memoryview
    frame_offset: int = 0
    gop_frames: int = 0
    #: seconds per ``pts`` unit (the source stream's time base); (0, 1) when unknown,
    #: as in messages from decoders older than this field (inference then treats
    #: ``detect_fps`` as "every frame").
    time_base: tuple[int, int] = (0, 1)
    #: per frame of ``frame_indices``: does ``pixels`` hold it (the model runs on it)? The
    #: decoder letterboxes and sends only those; empty: every frame is in ``pixels``.
    selected: tuple[bool, ...] = ()
    #: (0, 0): ``pixels`` hold ``shape``, the model's square input letterboxed by the decoder
    #: (every decoder before this field). Otherwise (height, width) of each frame's picture
    #: alone: ``pixels`` hold n × height × width × 3 (:attr:`pixel_shape`) and inference pads
    #: them at ``pad`` into the black square ``shape`` asks for; the bars are 44 % of a 16:9
    #: batch's bytes. A reader older than this field finds the byte count wrong and
    #: dead-letters the batch (replayable) instead of reading pictures as squares.
    picture: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        n, h, w, _ = self.shape
        if self.picture != (0, 0):
            (pad_x, pad_y), (height, width) = self.pad, self.picture
            if not (height > 0 and width > 0 and 0 <= pad_x <= w - width and 0 <= pad_y <= h - height):
                raise SchemaError(
                    f"frames picture {width}x{height} at pad {self.pad} does not fit the {w}x{h} input"
                )
        if len(self.frame_indices) != len(self.pts):
            raise SchemaError("frames frame_indices and pts differ in length")
        if self.selected and (len(self.selected) != len(self.frame_indices) or not self.selected[0]):
            raise SchemaError("frames selected must cover every frame and select the first")
        if n != (sum(self.selected) if self.selected else len(self.frame_indices)):
            raise SchemaError("frames shape does not match frame_indices/pts/selected")
        if self.time_base != (0, 1) and (self.time_base[0] <= 0 or self.time_base[1] <= 0):
            raise SchemaError(f"frames time_base must be positive, got {self.time_base}")
        needed = math.prod(self.pixel_shape)
        if len(self.pixels) != needed:
            raise SchemaError(f"frames pixels hold {len(self.pixels)} bytes, their shape needs {needed}")
        if not 0 <= self.part < self.parts:
            raise SchemaError(f"frames part {self.part} outside 0..{self.parts - 1}")

    @property
    def has_timestamps(self) -> bool:
        return self.time_base != (0, 1)

    @property
    def pixel_shape(self) -> tuple[int, int, int, int]:
        """What ``pixels`` hold: ``shape``, or n × :attr:`picture` × channels."""
        if self.picture == (0, 0):
            return self.shape
        n, _, _, c = self.shape
        return (n, *self.picture, c)


@dataclass(frozen=True)
class DetectionsMessage(Message):
    """DETECTIONS: per-frame boxes of one part, for applications."""

    KIND: ClassVar[str] = "detections"
    FORMAT: ClassVar[str] = "json"

    part: int
    parts: int
    frames: tuple[FrameDetections, ...]
    model: str = ""


@dataclass(frozen=True)
class EncodeItem(Message):
    """ANALYZE and ENCODE: every part of a GOP has detections; name the faces, draw, encode."""

    KIND: ClassVar[str] = "encode"

    video_seq: int
    frames: tuple[FrameDetections, ...]
    #: the GOP's face tracklets, set by the analysis stage (empty before it, or no faces).
    faces: tuple[FaceTracklet, ...] = ()
    #: an on-demand camera's GOP to burn in for its annotated live view only (its recording,
    #: the overlay segment, is already in OUTPUT): the encoder marks the segment ``rendition="live"``.
    live: bool = False
    #: an event clip's GOP (the event id; stages/event_clips.py): burnt in as ``rendition="clip"``.
    clip: str = ""


@dataclass(frozen=True)
class SegmentMessage(Message):
    """OUTPUT: one encoded, annotated segment per GOP."""

    KIND: ClassVar[str] = "segment"
    TAIL: ClassVar[str | None] = "data"

    container: str
    duration_s: float
    frames: tuple[FrameDetections, ...]
    data: bytes | memoryview
    discontinuity: bool = False
    #: "burn-in": boxes are in the pixels; "overlay": the camera's own video, boxes only in
    #: ``frames`` (players draw them at each frame's pts).
    mode: str = "burn-in"
    #: seconds per ``frames[].pts`` unit (the source's time base); (0, 1): unknown (older encoders).
    time_base: tuple[int, int] = (0, 1)
    #: the analysis stage's face tracklets, passed through by the encoder for the sink.
    faces: tuple[FaceTracklet, ...] = ()
    #: "": the camera's one segment of this GOP (recorded and shown live); on-demand cameras
    #: have "recording" (the overlay segment the sink records) and, while watched, "live" (burn-in,
    #: served as the annotated live playlist and WebRTC view, never recorded), and "clip": an
    #: event clip's GOP, burnt in on demand (``clip`` names the event), written under clips/.
    rendition: str = ""
    clip: str = ""
    #: the GOP's VIDEO sequence (0: unknown), so the sink can ask the encoder for it again later.
    video_seq: int = 0


@dataclass(frozen=True)
class GapMessage(Message):
    """DETECTIONS: the camera's input was interrupted; ``gop`` is the first GOP after the gap."""

    KIND: ClassVar[str] = "gap"
    FORMAT: ClassVar[str] = "json"

    since: float
    down_s: float
    reason: str = ""


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (GopMessage, FrameBatch, DetectionsMessage, EncodeItem, SegmentMessage, GapMessage)
}


__all__ = [
    "ENVELOPE_VERSION",
    "JSON_CONTENT_TYPE",
    "KINDS",
    "READABLE_ENVELOPE_VERSIONS",
    "AttributeReading",
    "Detection",
    "DetectionsMessage",
    "EncodeItem",
    "FaceTracklet",
    "FrameBatch",
    "FrameDetections",
    "GapMessage",
    "GopMessage",
    "Headers",
    "Message",
    "Packet",
    "SegmentMessage",
    "attributes_from_map",
    "attributes_map",
    "decode",
    "encode",
]
