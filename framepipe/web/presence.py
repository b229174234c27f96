"""The web server's side of viewer presence (:mod:`framepipe.core.viewers`): while someone
watches a camera's annotated live view (on-demand burn-in) or its instant view (the gateway's
live packets), keep that view's ``FP_VIEWERS`` key alive.

Two kinds of viewer count: an HLS player fetching ``/<camera>/live.m3u8`` or its segments
(every request touches; a player reloads a live playlist about once a segment), and an open
WHEP session (the server touches every camera with a WebRTC feed twice a second). A touch
writes the key at most once per ``viewer_ttl_s / 3``, so the key outlives the gaps between
reloads and expires ``viewer_ttl_s`` after the last viewer went, whoever forgot to say so.
The first touch of a camera is written at once: a new viewer's first burn-in GOP is the next
one the analysis stage finishes.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable

import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from framepipe.core.viewers import mark_watched, viewers_bucket

log = structlog.get_logger("framepipe.web.presence")
#: how often the WebRTC sessions are looked at (the worst extra wait of a new WHEP viewer).
WHEP_POLL_S = 0.5


class ViewerPresence:
    """Thread-safe ``touch``: HTTP handler threads and the event loop call it."""

    def __init__(self, viewer_ttl_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.refresh_s = max(0.2, viewer_ttl_s / 3)
        self._loop = loop
        self._kv: KeyValue | None = None
        self._written: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._failing = False

    async def start(self, js: JetStreamContext) -> None:
        self._kv = await viewers_bucket(js)

    def touch(self, camera: str, source: str = "hls", view: str = "annotated") -> None:
        if self._due(camera, view):
            asyncio.run_coroutine_threadsafe(self._write(camera, source, view), self._loop)

    async def mark(self, camera: str, source: str, view: str) -> None:
        """On the event loop: write the key now if it is due, and return once it is written
        (a new instant viewer: the gateway starts forwarding before the answer goes back)."""
        if self._due(camera, view):
            await self._write(camera, source, view)

    def _due(self, camera: str, view: str) -> bool:
        now, key = time.monotonic(), (camera, view)
        with self._lock:
            if now - self._written.get(key, -math.inf) < self.refresh_s:
                return False
            self._written[key] = now
        return True

    async def _write(self, camera: str, source: str, view: str) -> None:
        if self._kv is None:
            return
        try:
            await mark_watched(self._kv, camera, source, view)
            self._failing = False
        except Exception as exc:  # noqa: BLE001 - a lost refresh only shortens the view
            with self._lock:
                self._written.pop((camera, view), None)  # try again on the next touch
            if not self._failing:
                self._failing = True
                log.warning(
                    "presence.write_failed",
                    camera=camera,
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    detail="on-demand burn-in and the instant view may pause until NATS answers again",
                )

    async def follow(self, watched: Callable[[], Iterable[tuple[str, str]]], source: str = "webrtc") -> None:
        """Touch every (camera, view) ``watched()`` names, until cancelled (the WHEP sessions)."""
        while True:
            for camera, view in list(watched()):
                self.touch(camera, source, view)
            await asyncio.sleep(WHEP_POLL_S)
