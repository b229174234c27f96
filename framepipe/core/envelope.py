"""The wire envelope: headers for routing, msgpack (or JSON) for the body; encode and decode.

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
The message kinds themselves are :mod:`framepipe.core.messages`.
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
        return cls(
            **typed_fields(cls, raw, cls.KIND, f"{cls.KIND} body must be a map", f"{cls.KIND} message")
        )


def typed_fields(cls: type[Any], raw: Any, kind: str, not_a_map: str, what: str) -> dict[str, Any]:
    """The dataclass ``cls``'s fields out of the map ``raw``, each type-checked; only fields with a
    default may be absent. ``not_a_map`` and ``what`` ("gop message") word the SchemaErrors."""
    if not isinstance(raw, dict):
        raise SchemaError(not_a_map)
    kwargs: dict[str, Any] = {}
    for name, hint, required in _field_hints(cls):
        if name in raw:
            kwargs[name] = check_field_type(kind, name, hint, raw[name])
        elif required:
            raise SchemaError(f"{what} lacks field {name!r}")
    return kwargs


_FIELD_HINTS: dict[type[Any], tuple[tuple[str, Any, bool], ...]] = {}


def _field_hints(cls: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved type, required) of each field, once per class: ``get_type_hints``
    evaluates the string annotations anew on every call, which cost more than the decode of
    a detections message (one call per message and per nested frame and detection)."""
    if (known := _FIELD_HINTS.get(cls)) is not None:
        return known
    hints = typing.get_type_hints(cls)
    _FIELD_HINTS[cls] = fields = tuple(
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )
    return fields


#: checks one field's value against its type: (kind, field name, value) -> the value as kept.
FieldCheck = typing.Callable[[str, str, Any], Any]

_FIELD_CHECKS: dict[Any, FieldCheck] = {}


def check_field_type(kind: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` as the field ``name`` of type ``hint`` holds it; a :class:`SchemaError` if it cannot."""
    return field_check(hint)(kind, name, value)


def field_check(hint: Any) -> FieldCheck:
    """The check of ``hint``, built once per type: resolving a hint's origin and arguments at
    every value (every pts of a GOP, every element of a shape) was three quarters of a GOP or
    frames message's decode: 182 -> 40 µs for a 720p GOP (``bench.envelope_cost``)."""
    if (known := _FIELD_CHECKS.get(hint)) is None:
        known = _FIELD_CHECKS[hint] = _build_check(hint)
    return known


def _wrong(kind: str, name: str, value: Any) -> SchemaError:
    return SchemaError(f"{kind}.{name} has the wrong type ({type(value).__name__})")


def _check_int(kind: str, name: str, value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(kind, name, value)
    return value


def _check_float(kind: str, name: str, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong(kind, name, value)
    return float(value)


def _instance_check(accepted: type[Any] | types.UnionType) -> FieldCheck:
    def check(kind: str, name: str, value: Any) -> Any:
        if not isinstance(value, accepted):
            raise _wrong(kind, name, value)
        return value

    return check


_SCALAR_CHECKS: dict[Any, FieldCheck] = {
    int: _check_int,
    float: _check_float,
    str: _instance_check(str),
    bytes: _instance_check(bytes | memoryview),  # memoryview: a raw tail, zero-copy
    bool: _instance_check(bool),
}


def _build_check(hint: Any) -> FieldCheck:
    if hint in _SCALAR_CHECKS:
        return _SCALAR_CHECKS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _optional_check(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence_check(args[0])
        return _fixed_tuple_check(tuple(field_check(a) for a in args))

    def unsupported(kind: str, name: str, value: Any) -> Any:
        raise _wrong(kind, name, value)

    return unsupported


def _optional_check(args: tuple[Any, ...]) -> FieldCheck:
    inner = field_check(next(a for a in args if a is not type(None)))
    none_allowed = type(None) in args

    def check(kind: str, name: str, value: Any) -> Any:
        if value is None and none_allowed:
            return None
        return inner(kind, name, value)

    return check


def _sequence_check(item: Any) -> FieldCheck:
    """``tuple[item, ...]``: a list of items (nested messages decode themselves)."""
    if hasattr(item, "from_wire"):
        parse: typing.Callable[[Any], Any] = item.from_wire

        def check_nested(kind: str, name: str, value: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise _wrong(kind, name, value)
            return tuple(parse(v) for v in value)

        return check_nested
    each = field_check(item)

    def check(kind: str, name: str, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _wrong(kind, name, value)
        return tuple(each(kind, name, v) for v in value)

    return check


def _fixed_tuple_check(each: tuple[FieldCheck, ...]) -> FieldCheck:
    def check(kind: str, name: str, value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(each):
            raise _wrong(kind, name, value)
        return tuple(c(kind, name, v) for c, v in zip(each, value, strict=True))

    return check


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
