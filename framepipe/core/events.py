"""The EVENTS product stream: what happened to whom, per camera, as JSON.

``events.<camera>`` carries one JSON object per event (``EVENT_SCHEMA`` below is its
published JSON Schema). The sink writes each one to ``<output>/<camera>/events.jsonl``
as well. Types:

- ``person.appeared``: a new track (a face not seen on this camera a moment ago).
- ``person.identified``: the track's gallery identity was decided (or changed to
  another known person); at most once per track and name.
- ``alert.unknown_person``: the track stayed unknown for
  ``analysis.unknown_alert_after_gops`` analysed GOPs; once per track, never per frame.
- ``person.left``: the track was not seen for ``analysis.track_max_gap_gops`` GOPs
  (or its camera ended).
- ``alert.<name>`` from a face attribute (``alert.fever``): once per track, when the
  attribute's own rule says so (docs/attributes.md).

Every event carries the track's current face-attribute values (``attributes``, e.g.
``{"mask": {"value": "worn", "confidence": 0.93}}``; empty: none switched on or no
reading yet).

Every event's ``id`` is deterministic (camera, track, type, and the name for
``identified``) and is its ``Nats-Msg-Id``, so a replay after a crash is
de-duplicated by the stream instead of reaching applications twice.
"""

from __future__ import annotations

import re
from typing import Any

from framepipe.core.errors import SchemaError

SCHEMA_VERSION = 1
APPEARED = "person.appeared"
IDENTIFIED = "person.identified"
LEFT = "person.left"
UNKNOWN_ALERT = "alert.unknown_person"
TYPES = (APPEARED, IDENTIFIED, LEFT, UNKNOWN_ALERT)
#: the types face attributes raise (``Followed.alert``): ``alert.<word>``.
ATTRIBUTE_ALERT = re.compile(r"^alert\.[a-z][a-z0-9_]*$")


def known_type(kind: Any) -> bool:
    return isinstance(kind, str) and (kind in TYPES or bool(ATTRIBUTE_ALERT.match(kind)))


_BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}

#: JSON Schema (draft 2020-12) of one message of ``events.<camera>`` / one line of events.jsonl.
EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:framepipe:event:1",
    "title": "framepipe event",
    "type": "object",
    "required": [
        "schema", "id", "type", "camera", "track", "identity", "distance",
        "first_seen", "last_seen", "gop", "snapshot",
    ],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "description": "deterministic; the Nats-Msg-Id"},
        "type": {
            "anyOf": [{"enum": list(TYPES)}, {"type": "string", "pattern": ATTRIBUTE_ALERT.pattern}],
            "description": "what happened; alert.<word> (e.g. alert.fever) comes from a face attribute",
        },
        "camera": {"type": "string"},
        "track": {"type": "integer", "minimum": 1, "description": "one id per person per camera"},
        "identity": {"type": "string", "description": "the gallery's name, or 'unknown'"},
        "distance": {
            "type": ["number", "null"],
            "description": "dlib descriptor distance to the nearest gallery person; null: not embedded",
        },
        "first_seen": {"type": "number", "description": "Unix time of the track's first frame"},
        "last_seen": {"type": "number", "description": "Unix time of its last frame so far"},
        "gop": {"type": "integer", "description": "the GOP whose analysis decided the event"},
        "attributes": {
            "type": "object",
            "description": "the track's current face-attribute values (analysis.attributes)",
            "additionalProperties": {
                "type": "object",
                "required": ["value", "confidence"],
                "additionalProperties": False,
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
        "snapshot": {
            "type": "object",
            "required": ["gop", "frame", "box", "segment", "file"],
            "additionalProperties": False,
            "properties": {
                "gop": {"type": "integer"},
                "frame": {"type": "integer", "description": "source frame index"},
                "box": _BOX,
                "segment": {"type": "string", "description": "the annotated HLS segment holding it"},
                "file": {
                    "type": ["string", "null"],
                    "description": "JPEG of the face under <output>/<camera>/ (analysis.keep_snapshots)",
                },
            },
        },
    },
}  # fmt: skip


def event_id(camera: str, track: int, kind: str, identity: str = "") -> str:
    base = f"{camera}:track{track}:{kind}"
    return f"{base}:{identity}" if kind == IDENTIFIED else base


def make_event(
    kind: str,
    camera: str,
    track: int,
    *,
    identity: str,
    distance: float | None,
    first_seen: float,
    last_seen: float,
    gop: int,
    snapshot: dict[str, Any],
    attributes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    if not known_type(kind):
        raise SchemaError(f"unknown event type {kind!r}")
    return {
        "schema": SCHEMA_VERSION,
        "id": event_id(camera, track, kind, identity),
        "type": kind,
        "camera": camera,
        "track": track,
        "identity": identity,
        "distance": None if distance is None or distance < 0 else round(distance, 4),
        "first_seen": round(first_seen, 3),
        "last_seen": round(last_seen, 3),
        "gop": gop,
        "snapshot": snapshot,
        "attributes": attributes or {},
    }


def check_event(event: Any) -> dict[str, Any]:
    """The fields and types ``EVENT_SCHEMA`` requires (for readers without a schema library)."""
    if not isinstance(event, dict):
        raise SchemaError("an event is a JSON object")
    missing = [k for k in EVENT_SCHEMA["required"] if k not in event]
    if missing:
        raise SchemaError(f"event lacks {', '.join(missing)}")
    if not known_type(event["type"]) or event["schema"] != SCHEMA_VERSION:
        raise SchemaError(f"event type {event['type']!r} / schema {event['schema']!r} is not known")
    return event
