"""Who watches a camera's live views: the ``FP_VIEWERS`` bucket.

One key per watched camera and view (:meth:`Names.viewer_key`), refreshed by the web
server while a viewer is there and expiring ``streams.viewer_ttl_s`` after the last
refresh, so a viewer that leaves without a word (a closed tab) counts for no longer than
that. Two readers:

- the analysis stage reads ``<camera>`` once per GOP of an on-demand camera, and burns the
  boxes in while someone watches its annotated view (HLS requests of
  ``/<camera>/live.m3u8`` and its segments, open annotated WHEP sessions);
- the camera's gateway watches ``instant.<camera>`` (:class:`ViewerWatch`) and forwards
  each packet to ``live.<camera>`` only while someone watches the instant view.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framepipe.core.kv_watch import KvFollow, kv_updates
from framepipe.core.topology import Names, validate_camera_name

log = structlog.get_logger("framepipe.viewers")
#: the live views (WHEP ``?view=``): the annotated segments, or the camera's own packets as the
#: gateway reads them (``web/instant.py``).
VIEWS = ("annotated", "instant")


async def viewers_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(Names.VIEWERS_BUCKET)


async def mark_watched(kv: KeyValue, camera: str, source: str = "web", view: str = "annotated") -> None:
    """Record (or refresh) a viewer of ``camera``'s ``view``; the value says who and when, for humans."""
    validate_camera_name(camera)
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    await kv.put(Names.viewer_key(camera, view), f"{source} {time.time():.3f}".encode())


async def is_watched(kv: KeyValue, camera: str) -> bool:
    """A key that has not expired yet (the bucket's TTL removes it; a delete leaves a marker)."""
    try:
        entry = await kv.get(camera)
    except KeyNotFoundError:
        return False
    return bool(entry.value)


class ViewerWatch:
    """Whether someone watches one camera's view now, pushed by a KV watch of its key.

    A put counts for ``ttl_s`` from when it arrives (the bucket expires the key then, and
    an expiry sends no message); a delete or purge ends it at once. When the watch cannot
    be opened the view counts as watched (one warning): forwarding to nobody costs CPU,
    a viewer who gets nothing is a fault.
    """

    def __init__(
        self, camera: str, ttl_s: float, view: str = "instant", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.key = Names.viewer_key(camera, view)
        self.camera, self.ttl_s, self.clock = camera, ttl_s, clock
        self._until = 0.0
        self._always = False
        self._watching = KvFollow()

    @property
    def watched(self) -> bool:
        return self._always or self.clock() < self._until

    async def start(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        """Open the watch and wait (up to ``timeout``) for the key's current value."""
        loaded = asyncio.Event()
        try:
            kv = await viewers_bucket(js)
            watcher = await kv.watch(self.key)
        except Exception as exc:  # noqa: BLE001 - any failure: forward to be safe
            self._always = True
            log.warning(
                "viewers.watch_failed",
                camera=self.camera,
                key=self.key,
                error=f"{type(exc).__name__}: {exc}"[:200],
                detail="live packets are forwarded whether or not anyone watches; run `framepipe setup`",
            )
            return
        self._watching.start(watcher, lambda w: self._follow(w, loaded))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loaded.wait(), timeout)

    async def stop(self) -> None:
        """End the watch: the task and its ordered consumer."""
        await self._watching.stop()

    async def _follow(self, watcher: object, loaded: asyncio.Event) -> None:
        async for entry in kv_updates(watcher):
            if entry is None:  # the end of the current value (if any)
                loaded.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._until = 0.0
            else:
                self._until = self.clock() + self.ttl_s
