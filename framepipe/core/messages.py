"""Versioned message envelopes: headers for routing, msgpack (or JSON) for the body.

Every message carries ``Framepipe-Version`` and ``Framepipe-Kind`` headers. The
body is a msgpack map whose large fields (encoded packets, segments) are raw
``bin`` values, so nothing is base64'd and nothing is pickled. A kind with one
dominant bytes field (``TAIL``: the pixel tensor of a frame batch, the segment of
an output) sends it after the map instead, its offset in the ``Framepipe-Tail``
header: the writer copies it once and the reader gets a ``memoryview`` of the
received body, not two msgpack copies of megabytes per message.
The kinds of the product streams that applications read (``FORMAT = "json"``:
DETECTIONS) are JSON objects instead, with a ``kind`` member and a
``Content-Type: application/json`` header, readable with the nats CLI and from any
language; their JSON Schemas are :mod:`framepipe.core.schemas`.
Decoding checks the version, the kind and every field's type; any mismatch is a
:class:`SchemaError`, which the runner routes to the dead-letter stream.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

from framepipe.core.errors import SchemaError, UnknownVersionError

M = TypeVar("M", bound="Message")

#: written by this build. 2: a message's large bytes field may follow the msgpack map as a
#: raw tail (``Framepipe-Tail`` header), so pixel tensors are never copied through msgpack.
ENVELOPE_VERSION = 2
#: every envelope version this build decodes (1: messages from older writers still in a stream).
READABLE_ENVELOPE_VERSIONS = (1, 2)


class Headers:
    """Header names carried by every framepipe message."""

    VERSION = "Framepipe-Version"
    KIND = "Framepipe-Kind"
    #: byte offset in the body where the raw tail (the kind's ``TAIL`` field) starts.
    TAIL = "Framepipe-Tail"
    CAMERA = "Framepipe-Camera"
    GOP = "Framepipe-Gop"
    STAGE = "Framepipe-Stage"
    ERROR = "Framepipe-Error"
    ERROR_KIND = "Framepipe-Error-Kind"
    ORIGINAL_SUBJECT = "Framepipe-Original-Subject"
    ORIGINAL_STREAM_SEQ = "Framepipe-Original-Seq"
    DELIVERIES = "Framepipe-Deliveries"
    MSG_ID = "Nats-Msg-Id"
    #: ``application/json`` on JSON bodies (product streams); absent on msgpack bodies.
    CONTENT_TYPE = "Content-Type"


JSON_CONTENT_TYPE = "application/json"


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

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "label": self.label,
        }
        if self.track >= 0:  # only analysed detections carry them: DETECTIONS stays as it was
            wire["track"] = self.track
            wire["identity"] = self.identity
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
        return cls(box4, float(score), label, track, identity)


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
class Message:
    """Base of all envelopes; subclasses set ``KIND`` and declare typed fields."""

    KIND: ClassVar[str] = ""
    #: a bytes field sent as the body's raw tail rather than inside the msgpack map.
    TAIL: ClassVar[str | None] = None
    #: "msgpack" (internal streams) or "json" (product streams applications read).
    FORMAT: ClassVar[str] = "msgpack"

    camera: str
    gop: int

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and value and hasattr(value[0], "to_wire"):
                value = [v.to_wire() for v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_wire(cls: type[M], raw: Any) -> M:
        if not isinstance(raw, dict):
            raise SchemaError(f"{cls.KIND} body must be a map")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise SchemaError(f"{cls.KIND} message lacks field {f.name!r}")
            kwargs[f.name] = _check_type(cls.KIND, f.name, hints[f.name], raw[f.name])
        return cls(**kwargs)


def _check_type(kind: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    bad = SchemaError(f"{kind}.{name} has the wrong type ({type(value).__name__})")
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if hint is bytes:
        # memoryview: a raw tail, a zero-copy view of the received body.
        if not isinstance(value, bytes | memoryview):
            raise bad
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(kind, name, inner[0], value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if hasattr(item, "from_wire"):
                return tuple(item.from_wire(v) for v in value)
            return tuple(_check_type(kind, name, item, v) for v in value)
        if len(args) != len(value):
            raise bad
        return tuple(_check_type(kind, name, a, v) for a, v in zip(args, value, strict=True))
    raise bad


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

    def __post_init__(self) -> None:
        n, h, w, c = self.shape
        if len(self.frame_indices) != len(self.pts):
            raise SchemaError("frames frame_indices and pts differ in length")
        if self.selected and (len(self.selected) != len(self.frame_indices) or not self.selected[0]):
            raise SchemaError("frames selected must cover every frame and select the first")
        if n != (sum(self.selected) if self.selected else len(self.frame_indices)):
            raise SchemaError("frames shape does not match frame_indices/pts/selected")
        if self.time_base != (0, 1) and (self.time_base[0] <= 0 or self.time_base[1] <= 0):
            raise SchemaError(f"frames time_base must be positive, got {self.time_base}")
        if len(self.pixels) != n * h * w * c:
            raise SchemaError(f"frames pixels hold {len(self.pixels)} bytes, shape needs {n * h * w * c}")
        if not 0 <= self.part < self.parts:
            raise SchemaError(f"frames part {self.part} outside 0..{self.parts - 1}")

    @property
    def has_timestamps(self) -> bool:
        return self.time_base != (0, 1)


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

    def to_wire(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> FaceTracklet:
        if not isinstance(raw, dict):
            raise SchemaError("face tracklet must be a map")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in raw:
                kwargs[f.name] = _check_type("tracklet", f.name, hints[f.name], raw[f.name])
            elif f.default is dataclasses.MISSING:
                raise SchemaError(f"face tracklet lacks field {f.name!r}")
        if isinstance(kwargs.get("embedding"), memoryview):
            kwargs["embedding"] = bytes(kwargs["embedding"])
        return cls(**kwargs)


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


def encode(message: Message) -> tuple[dict[str, str], bytes]:
    """Serialise ``message`` into (headers, body)."""
    headers = {
        Headers.VERSION: str(ENVELOPE_VERSION),
        Headers.KIND: message.KIND,
        Headers.CAMERA: message.camera,
        Headers.GOP: str(message.gop),
    }
    wire = message.to_wire()
    if message.FORMAT == "json":
        headers[Headers.CONTENT_TYPE] = JSON_CONTENT_TYPE
        return headers, json.dumps({"kind": message.KIND, **wire}, separators=(",", ":")).encode()
    if message.TAIL is None:
        return headers, msgpack.packb(wire, use_bin_type=True)
    tail = wire.pop(message.TAIL)
    head: bytes = msgpack.packb(wire, use_bin_type=True)
    headers[Headers.TAIL] = str(len(head))
    return headers, head + tail


def _unpack(kind: str, body: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many unrelated types on garbage
        raise SchemaError(f"{kind} body is not valid msgpack: {type(exc).__name__}") from None


def _parse_json(kind: str, body: bytes) -> Any:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{kind} body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(raw, dict) or raw.pop("kind", None) != kind:
        raise SchemaError(f'{kind} JSON body must be an object with "kind": {kind!r}')
    return raw


def _split_tail(kind: str, tail_field: str | None, offset_header: str, body: bytes) -> Any:
    """The msgpack map of a tailed body, with the tail put back as ``tail_field``."""
    if tail_field is None:
        raise SchemaError(f"{kind} messages carry no raw tail, got {Headers.TAIL}: {offset_header!r}"[:200])
    # isascii: str.isdigit() also accepts "²", which int() refuses; the length bound keeps
    # int() away from its 4300-digit limit.
    digits = offset_header.isascii() and offset_header.isdigit() and len(offset_header) <= 20
    if not digits or int(offset_header) > len(body):
        where = f"{kind} {Headers.TAIL} {offset_header!r}"[:100]
        raise SchemaError(f"{where} is outside the {len(body)}-byte body")
    view = memoryview(body)
    raw = _unpack(kind, view[: int(offset_header)])
    if not isinstance(raw, dict) or tail_field in raw:
        raise SchemaError(f"{kind} body before the tail must be a map without {tail_field!r}")
    raw[tail_field] = view[int(offset_header) :]
    return raw


def decode(headers: typing.Mapping[str, str] | None, body: bytes, expect: type[M]) -> M:
    """Parse a body sent by :func:`encode`; raise a :class:`SchemaError` subclass."""
    headers = headers or {}
    version = headers.get(Headers.VERSION)
    if version not in {str(v) for v in READABLE_ENVELOPE_VERSIONS}:
        readable = ", ".join(str(v) for v in READABLE_ENVELOPE_VERSIONS)
        raise UnknownVersionError(
            f"envelope version {version!r} is not supported (this build reads {readable})"
        )
    kind = headers.get(Headers.KIND)
    if kind != expect.KIND:
        raise SchemaError(f"expected a {expect.KIND!r} message, got {kind!r}")
    offset_header = headers.get(Headers.TAIL)
    if headers.get(Headers.CONTENT_TYPE) == JSON_CONTENT_TYPE:
        # msgpack bodies of the same kind (older writers, still in the stream) read below.
        raw = _parse_json(kind, body)
    elif offset_header is None:
        raw = _unpack(kind, body)
    else:
        raw = _split_tail(kind, expect.TAIL, offset_header, body)
    try:
        return expect.from_wire(raw)
    except SchemaError:
        raise
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise SchemaError(f"{kind} body is malformed: {exc}") from None


__all__ = [
    "JSON_CONTENT_TYPE",
    "KINDS",
    "Detection",
    "DetectionsMessage",
    "EncodeItem",
    "FaceTracklet",
    "FrameBatch",
    "FrameDetections",
    "GapMessage",
    "GopMessage",
    "Message",
    "Packet",
    "SegmentMessage",
    "decode",
    "encode",
]
