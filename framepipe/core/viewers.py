"""Who watches an on-demand camera's annotated live view: the ``FP_VIEWERS`` bucket.

One key per watched camera, refreshed by the web server while a viewer is there (HLS
requests of ``/<camera>/live.m3u8`` and its segments, open WHEP sessions) and expiring
``streams.viewer_ttl_s`` after the last refresh, so a viewer that leaves without a word
(a closed tab) stops the burn-in by itself. The analysis stage reads it once per GOP of an
on-demand camera.
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framepipe.core.topology import Names, validate_camera_name


async def viewers_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(Names.VIEWERS_BUCKET)


async def mark_watched(kv: KeyValue, camera: str, source: str = "web") -> None:
    """Record (or refresh) a viewer of ``camera``; the value says who and when, for humans."""
    validate_camera_name(camera)
    await kv.put(camera, f"{source} {time.time():.3f}".encode())


async def is_watched(kv: KeyValue, camera: str) -> bool:
    """A key that has not expired yet (the bucket's TTL removes it; a delete leaves a marker)."""
    try:
        entry = await kv.get(camera)
    except KeyNotFoundError:
        return False
    return bool(entry.value)
