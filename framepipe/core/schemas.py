"""What each stream carries, as JSON Schema: one place for publishers, sink, docs and clients.

:data:`STREAM_KINDS` maps every stream of :data:`~framepipe.core.topology.STREAMS` to the
message kinds on it. The schemas are derived from the envelope dataclasses of
:mod:`framepipe.core.messages` (field types, defaults), so they cannot drift from what
:func:`~framepipe.core.messages.encode` writes; :data:`FIELD_DOCS` adds what a field means.

Product streams (``StreamSpec.product``: DETECTIONS) carry JSON objects that validate
against :func:`stream_schema` (draft 2020-12, written to ``docs/schemas/``); the AsyncAPI
document (:mod:`framepipe.core.asyncapi`) embeds the same kind schemas for every stream,
internal ones describing their msgpack maps. A new product stream is one ``StreamSpec``
with ``product=True`` plus its kinds (``FORMAT = "json"``) in :data:`STREAM_KINDS`;
``tests/core/test_schemas.py`` fails until both are there.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from framepipe.core import events, messages
from framepipe.core.messages import Headers
from framepipe.core.topology import STREAMS, Names, StreamSpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
Schema = dict[str, Any]

#: the kinds each stream carries. The DLQ holds copies of any kind (see HEADERS_DLQ).
STREAM_KINDS: dict[str, tuple[type[messages.Message], ...]] = {
    Names.VIDEO: (messages.GopMessage,),
    Names.THERMAL: (messages.GopMessage,),
    Names.FRAMES: (messages.FrameBatch,),
    Names.DETECTIONS: (messages.DetectionsMessage, messages.GapMessage),
    Names.ANALYZE: (messages.EncodeItem,),
    Names.ENCODE: (messages.EncodeItem,),
    Names.OUTPUT: (messages.SegmentMessage,),
    Names.DLQ: (),
    Names.EVENTS: (),  # not envelopes: see EVENT_STREAMS
}

#: product streams whose bodies are plain JSON documents, not envelopes: the kind name the
#: contract gives them and their published schema (:mod:`framepipe.core.events`).
EVENT_STREAMS: dict[str, tuple[str, Schema]] = {Names.EVENTS: ("event", events.EVENT_SCHEMA)}
#: the headers the sink sets on each event (``tracking.publish_events``).
EVENT_HEADERS: dict[str, str] = {
    Headers.CONTENT_TYPE: "application/json",
    "Framepipe-Event": "the event's type member (person.appeared, ...)",
    Headers.MSG_ID: "the event's id member: JetStream drops a replayed event",
}

#: where a stage publishes only some of a stream's kinds (otherwise: all of them).
STAGE_SENDS: dict[tuple[str, str], tuple[str, ...]] = {
    (Names.GATEWAY, Names.DETECTIONS): (messages.GapMessage.KIND,),
    (Names.INFERENCE, Names.DETECTIONS): (messages.DetectionsMessage.KIND,),
}

#: what a field means, for applications (kind.field, or a shared definition's field).
FIELD_DOCS: dict[str, str] = {
    "camera": "camera name, also the last token of the subject",
    "gop": "index of the GOP (group of pictures) in the camera's stream, from 0",
    "detections.part": "which part of the GOP this is (a long GOP is split), from 0",
    "detections.parts": "how many parts the GOP has; a GOP is complete when all arrived",
    "detections.frames": "detections of each frame of this part, in frame order",
    "detections.model": "the detector that produced the boxes, e.g. blazeface-full",
    "gap.gop": "the first GOP after the interruption",
    "gap.since": "when the input stopped, seconds since the Unix epoch",
    "gap.down_s": "how long the input was down, in seconds",
    "gap.reason": "why the gateway reconnected",
    "Frame.frame": "index of the frame in the source stream, from 0",
    "Frame.pts": "presentation timestamp of the frame, in the source stream's time base",
    "Frame.detections": "boxes found in this frame (empty: none, or the frame was not analysed)",
    "Detection.box": "x1, y1, x2, y2 in source pixels",
    "Detection.score": "detector confidence, 0..1",
    "Detection.label": "what was detected",
    "Detection.track": "the face's track id on its camera (analysed detections only)",
    "Detection.identity": "the gallery's name or 'unknown' (analysed detections only)",
    "Detection.attributes": "the face's attribute readings by name, e.g. mask (analysis.attributes; "
    "absent: none switched on, or no reading)",
}

DETECTION: Schema = {
    "type": "object",
    "title": "Detection",
    "required": ["box", "score", "label"],
    "properties": {
        "box": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 4,
            "maxItems": 4,
            "description": FIELD_DOCS["Detection.box"],
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": FIELD_DOCS["Detection.score"]},
        "label": {"type": "string", "description": FIELD_DOCS["Detection.label"]},
        "track": {"type": "integer", "description": FIELD_DOCS["Detection.track"]},
        "identity": {"type": "string", "description": FIELD_DOCS["Detection.identity"]},
        "attributes": {
            "type": "object",
            "description": FIELD_DOCS["Detection.attributes"],
            "additionalProperties": {
                "type": "object",
                "required": ["value", "confidence"],
                "properties": {
                    "value": {
                        # anyOf, not a type list: strict validators (Ajv strictTypes) refuse unions.
                        "anyOf": [{"type": "string"}, {"type": "number"}],
                        "description": "e.g. worn, or 37.9 (°C)",
                    },
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
        },
    },
}


def frame_schema(ref_prefix: str) -> Schema:
    return {
        "type": "object",
        "title": "Frame",
        "required": ["frame", "pts", "detections"],
        "properties": {
            "frame": {"type": "integer", "minimum": 0, "description": FIELD_DOCS["Frame.frame"]},
            "pts": {"type": "integer", "description": FIELD_DOCS["Frame.pts"]},
            "detections": {
                "type": "array",
                "items": {"$ref": f"{ref_prefix}Detection"},
                "description": FIELD_DOCS["Frame.detections"],
            },
        },
    }


def shared_definitions(ref_prefix: str) -> dict[str, Schema]:
    """The definitions kind schemas refer to as ``{ref_prefix}Frame`` / ``Detection``."""
    return {"Frame": frame_schema(ref_prefix), "Detection": DETECTION}


def _type_schema(hint: Any, ref_prefix: str, json_body: bool) -> Schema:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    simple = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is messages.FrameDetections:
        return {"$ref": f"{ref_prefix}Frame"}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = dataclasses.fields(hint)
        return {
            "type": "object",
            "title": hint.__name__,
            "required": [f.name for f in fields if f.default is dataclasses.MISSING],
            "properties": {f.name: _type_schema(hints[f.name], ref_prefix, json_body) for f in fields},
        }
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if set(inner) <= {bytes, memoryview}:  # memoryview: a received raw tail
            inner = [bytes]
        parts = [_type_schema(a, ref_prefix, json_body) for a in inner]
        if type(None) in args:
            parts.append({"type": "null"})
        return parts[0] if len(parts) == 1 else {"anyOf": parts}
    if hint is bytes:
        if json_body:
            raise TypeError("JSON bodies carry no bytes fields")
        return {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "msgpack bin",
        }
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], ref_prefix, json_body)}
        if len(set(args)) != 1:
            raise TypeError(f"no schema for mixed tuple {hint}")
        item = _type_schema(args[0], ref_prefix, json_body)
        return {"type": "array", "items": item, "minItems": len(args), "maxItems": len(args)}
    raise TypeError(f"no JSON Schema for {hint!r}")


def kind_schema(cls: type[messages.Message], ref_prefix: str = "#/$defs/") -> Schema:
    """The body of one kind: its dataclass fields (plus ``kind`` for JSON bodies)."""
    json_body = cls.FORMAT == "json"
    hints = typing.get_type_hints(cls)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    if json_body:
        properties["kind"] = {"const": cls.KIND, "description": "which message this is"}
        required.append("kind")
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name], ref_prefix, json_body)
        doc = FIELD_DOCS.get(f"{cls.KIND}.{f.name}") or FIELD_DOCS.get(f.name)
        if f.name == cls.TAIL:
            doc = f"raw tail after the msgpack map, at the byte offset in {Headers.TAIL}"
        if doc:
            prop = {**prop, "description": doc}
        if f.default is not dataclasses.MISSING and not isinstance(f.default, bytes | memoryview):
            prop = {**prop, "default": list(f.default) if isinstance(f.default, tuple) else f.default}
        properties[f.name] = prop
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    summary = (cls.__doc__ or "").strip().splitlines()[0]
    return {
        "type": "object",
        "title": cls.__name__,
        "description": summary,
        "required": required,
        "properties": properties,
    }


def stream_spec(stream: str) -> StreamSpec:
    return next(spec for spec in STREAMS if spec.name == stream)


def product_streams() -> tuple[StreamSpec, ...]:
    """The streams applications read: JSON with a published schema."""
    return tuple(spec for spec in STREAMS if spec.product)


def schema_id(stream: str) -> str:
    return f"urn:framepipe:schema:{stream.lower()}"


def stream_schema(stream: str) -> Schema:
    """A standalone draft 2020-12 schema every message body of a product stream validates."""
    if stream in EVENT_STREAMS:
        return {**EVENT_STREAMS[stream][1], "$id": schema_id(stream)}
    kinds = STREAM_KINDS[stream]
    if not stream_spec(stream).product or not all(cls.FORMAT == "json" for cls in kinds):
        raise ValueError(f"{stream} is not a JSON product stream")
    return {
        "$schema": DIALECT,
        "$id": schema_id(stream),
        "title": f"{stream} message",
        "description": f"The JSON body of a message on {Names.wildcard(stream)} (see the kind member).",
        "oneOf": [kind_schema(cls) for cls in kinds],
        "$defs": shared_definitions("#/$defs/"),
    }


def detections_line_schema() -> Schema:
    """One line of the sink's ``detections.jsonl``: a frame with its camera and GOP."""
    frame = frame_schema("#/$defs/")
    return {
        "$schema": DIALECT,
        "$id": f"{schema_id(Names.DETECTIONS)}:jsonl-line",
        "title": "detections.jsonl line",
        "type": "object",
        "required": ["camera", "gop", *frame["required"]],
        "properties": {
            "camera": {"type": "string", "description": FIELD_DOCS["camera"]},
            "gop": {"type": "integer", "minimum": 0, "description": FIELD_DOCS["gop"]},
            **frame["properties"],
        },
        "$defs": {"Detection": DETECTION},
    }


#: headers of every message (``Framepipe-Tail`` and ``Content-Type`` where the kind has them).
HEADER_DOCS: dict[str, str] = {
    Headers.VERSION: "envelope version (readers refuse unknown ones)",
    Headers.KIND: "message kind, the body's kind member on JSON streams",
    Headers.CAMERA: "camera name",
    Headers.GOP: "GOP index, decimal",
    Headers.STAGE: "the stage that published the message",
    Headers.MSG_ID: "JetStream de-duplication id: <camera>:<gop>:<stage>[:<part>]",
}
HEADERS_TAIL = {Headers.TAIL: "byte offset of the raw tail after the msgpack map"}
HEADERS_JSON = {Headers.CONTENT_TYPE: "application/json"}
#: what a dead letter adds to the original message's headers (its Nats-Msg-Id is dropped).
HEADERS_DLQ: dict[str, str] = {
    Headers.ERROR_KIND: "why it was dead-lettered (a PoisonError reason or retries-exhausted)",
    Headers.ERROR: "the error, one line",
    Headers.ORIGINAL_SUBJECT: "the subject it was read from (re-drive target)",
    Headers.ORIGINAL_STREAM_SEQ: "its sequence in the original stream",
    Headers.DELIVERIES: "deliveries before it was dead-lettered",
}


def headers_schema(cls: type[messages.Message] | None) -> Schema:
    """The NATS headers of a kind (None: a dead letter, which keeps the original's)."""
    docs = dict(HEADER_DOCS)
    required = [Headers.VERSION, Headers.KIND, Headers.CAMERA, Headers.GOP]
    if cls is None:
        docs.pop(Headers.MSG_ID)
        docs.update(HEADERS_TAIL)
        docs.update(HEADERS_DLQ)
        required += [Headers.STAGE, *HEADERS_DLQ]
    elif cls.FORMAT == "json":
        docs.update(HEADERS_JSON)
        required.append(Headers.CONTENT_TYPE)
    elif cls.TAIL is not None:
        docs.update(HEADERS_TAIL)
        required.append(Headers.TAIL)
    properties: dict[str, Schema] = {
        name: {"type": "string", "description": doc} for name, doc in docs.items()
    }
    if cls is not None:
        properties[Headers.KIND] = {**properties[Headers.KIND], "const": cls.KIND}
        if cls.FORMAT == "json":
            properties[Headers.CONTENT_TYPE] = {"type": "string", "const": messages.JSON_CONTENT_TYPE}
    return {"type": "object", "required": required, "properties": properties}
