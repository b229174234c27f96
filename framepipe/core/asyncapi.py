"""The AsyncAPI 3.0 document of every subject, generated from the stage and stream tables.

Channels are the streams' subjects (``video.{camera}``, ``dlq.{stage}``), messages the
kinds of :data:`~framepipe.core.schemas.STREAM_KINDS` with their headers and JSON Schema
payloads, operations who sends and who receives what: each stage's ``publishes`` and
``consumers`` in :data:`~framepipe.core.topology.STAGES`, plus applications on the
product streams. ``docs/asyncapi.json`` and ``docs/schemas/*.schema.json`` are written by
``python -m framepipe.core.asyncapi docs`` (``make asyncapi``); a test keeps them equal
to what this module renders, and ``make contract`` validates them with the AsyncAPI
parser from npm. The web server serves the same document at ``/asyncapi.json``.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from framepipe.core import events, messages
from framepipe.core.schemas import (
    EVENT_HEADERS,
    EVENT_STREAMS,
    STAGE_SENDS,
    STREAM_KINDS,
    Schema,
    detections_line_schema,
    headers_schema,
    kind_schema,
    shared_definitions,
    stream_schema,
)
from framepipe.core.topology import STAGES, STREAMS, Names, StreamSpec

ASYNCAPI_VERSION = "3.0.0"
COMPONENTS = "#/components/schemas/"
MSGPACK = "application/msgpack"
#: the ``Framepipe-Kind`` of a dead letter's message entry (a copy of any kind).
DEAD_LETTER = "dead-letter"
APPLICATIONS = "applications"


def _version() -> str:
    try:
        return metadata.version("framepipe")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _channel_id(stream: str) -> str:
    return stream.lower()


def _parameter(stream: str) -> str:
    return "stage" if stream == Names.DLQ else "camera"


def _address(stream: str) -> str:
    return f"{Names.SUBJECT_PREFIX[stream]}.{{{_parameter(stream)}}}"


def _message(cls: type[messages.Message] | None) -> Schema:
    if cls is None:
        return {
            "name": DEAD_LETTER,
            "title": "Dead letter",
            "summary": "A poison input, byte for byte, with why it failed in its headers.",
            "contentType": MSGPACK,
            "headers": headers_schema(None),
            "payload": {"description": "the original body (msgpack, or JSON for a product kind)"},
        }
    summary = (cls.__doc__ or "").strip().splitlines()[0]
    return {
        "name": cls.KIND,
        "title": cls.__name__,
        "summary": summary,
        "contentType": messages.JSON_CONTENT_TYPE if cls.FORMAT == "json" else MSGPACK,
        "headers": headers_schema(cls),
        "payload": kind_schema(cls, COMPONENTS),
    }


def _event_message(stream: str) -> Schema:
    kind, schema = EVENT_STREAMS[stream]
    payload = {key: value for key, value in schema.items() if key not in ("$schema", "$id")}
    return {
        "name": kind,
        "title": "Event",
        "summary": (events.__doc__ or "").strip().splitlines()[0],
        "contentType": messages.JSON_CONTENT_TYPE,
        "headers": {
            "type": "object",
            "required": list(EVENT_HEADERS),
            "properties": {
                name: {"type": "string", "description": doc} for name, doc in EVENT_HEADERS.items()
            },
        },
        "payload": payload,
    }


def _kinds(stream: str) -> list[str]:
    if stream in EVENT_STREAMS:
        return [EVENT_STREAMS[stream][0]]
    return [cls.KIND for cls in STREAM_KINDS[stream]] or [DEAD_LETTER]


def _channel(spec: StreamSpec) -> Schema:
    stream = spec.name
    if stream == Names.DLQ:
        param = {"description": "the stage that dead-lettered it", "enum": _dead_letter_stages()}
    else:
        param = {"description": "camera name (letters, digits, '_' or '-')"}
    encoding = "JSON (a product stream for applications)" if spec.product else "msgpack envelopes"
    retention = "work queue (deleted when acked)" if spec.work_queue else "limits (kept until max age/bytes)"
    return {
        "address": _address(stream),
        "title": stream,
        "description": f"JetStream stream {stream}, {retention}; {encoding}.",
        "parameters": {_parameter(stream): param},
        "messages": {kind: {"$ref": f"#/components/messages/{kind}"} for kind in _kinds(stream)},
    }


def _dead_letter_stages() -> list[str]:
    return [spec.name for spec in STAGES if spec.dead_letters]


def _streams_published(subjects: tuple[str, ...]) -> list[str]:
    return [spec.name for spec in STREAMS if Names.wildcard(spec.name) in subjects]


def _operation(action: str, stream: str, kinds: list[str], summary: str, **extra: Any) -> Schema:
    channel = _channel_id(stream)
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{kind}"} for kind in kinds],
        **extra,
    }


def _operations() -> dict[str, Schema]:
    ops: dict[str, Schema] = {}
    for spec in STAGES:
        for stream in _streams_published(spec.publishes):
            kinds = list(STAGE_SENDS.get((spec.name, stream), _kinds(stream)))
            ops[f"{spec.name}-send-{_channel_id(stream)}"] = _operation(
                "send", stream, kinds, f"the {spec.name} stage publishes to {_address(stream)}"
            )
        if spec.dead_letters:
            ops[f"{spec.name}-send-dlq"] = _operation(
                "send", Names.DLQ, [DEAD_LETTER], f"the {spec.name} stage dead-letters to dlq.{spec.name}"
            )
        for consumer in spec.consumers:
            ops[f"{spec.name}-receive-{consumer.durable}"] = _operation(
                "receive",
                consumer.stream,
                _kinds(consumer.stream),
                f"the {spec.name} stage reads the durable pull consumer {consumer.durable!r}",
                **{"x-framepipe-consumer": {"stream": consumer.stream, "durable": consumer.durable}},
            )
    for product in STREAMS:
        if product.product:
            ops[f"{APPLICATIONS}-receive-{_channel_id(product.name)}"] = _operation(
                "receive",
                product.name,
                _kinds(product.name),
                f"applications read {Names.wildcard(product.name)} (framepipe.client, any NATS client)",
            )
    return ops


def document() -> Schema:
    """The whole AsyncAPI 3.0 document."""
    message_classes = [cls for kinds in STREAM_KINDS.values() for cls in kinds]
    components_messages = {cls.KIND: _message(cls) for cls in message_classes}
    components_messages[DEAD_LETTER] = _message(None)
    for stream in EVENT_STREAMS:
        components_messages[EVENT_STREAMS[stream][0]] = _event_message(stream)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "framepipe",
            "version": _version(),
            "description": (
                "Subjects of a framepipe deployment on NATS JetStream. Applications read the "
                "product streams (JSON); the others are internal msgpack envelopes "
                f"(header {messages.Headers.VERSION} = {messages.ENVELOPE_VERSION}). "
                "Generated from framepipe/core/topology.py; do not edit."
            ),
        },
        "defaultContentType": MSGPACK,
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "the embedded server of `framepipe run`",
            }
        },
        "channels": {_channel_id(spec.name): _channel(spec) for spec in STREAMS},
        "operations": _operations(),
        "components": {"messages": components_messages, "schemas": shared_definitions(COMPONENTS)},
    }


def render_json(value: Schema) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def rendered_files() -> dict[str, str]:
    """Path under ``docs/`` → content of every generated contract file."""
    files = {"asyncapi.json": render_json(document())}
    for spec in STREAMS:
        if spec.product:
            files[f"schemas/{spec.name.lower()}.schema.json"] = render_json(stream_schema(spec.name))
    files["schemas/detections-jsonl-line.schema.json"] = render_json(detections_line_schema())
    return files


def write_docs(docs: Path) -> list[Path]:
    written = []
    for rel, content in rendered_files().items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)
