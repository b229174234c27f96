"""Viewer presence on a real nats-server: the web server's touches keep a camera's
FP_VIEWERS key alive, and the bucket's TTL ends it once nobody touches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from framepipe.core import bus
from framepipe.core.settings import Settings
from framepipe.core.viewers import is_watched, viewers_bucket
from framepipe.web.presence import ViewerPresence

TTL_S = 1.0


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> float:
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


class TestViewerPresence:
    async def test_touches_keep_a_camera_watched_and_the_ttl_ends_it(
        self, nc: Client, nats_settings: Settings
    ) -> None:
        """A first touch writes at once; touches more often than ttl/3 write once; refreshes
        keep the key past its TTL; without them it expires after about the TTL."""
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, nats_settings.replace(streams={"viewer_ttl_s": TTL_S}))
        kv = await viewers_bucket(js)
        presence = ViewerPresence(TTL_S, asyncio.get_running_loop())
        await presence.start(js)
        assert not await is_watched(kv, "lobby")
        presence.touch("lobby")
        await _until(lambda: is_watched(kv, "lobby"), 2.0)
        first = (await kv.get("lobby")).revision
        presence.touch("lobby")  # within refresh_s of the first: no second write
        await asyncio.sleep(0.1)
        assert (await kv.get("lobby")).revision == first
        for _ in range(8):  # 2 s of a player reloading every 0.25 s: twice the TTL
            presence.touch("lobby")
            await asyncio.sleep(0.25)
            assert await is_watched(kv, "lobby")
        left = time.monotonic()
        await _until(lambda: _not(is_watched(kv, "lobby")), 5.0)
        assert time.monotonic() - left >= TTL_S * 0.5  # the key outlived the last touch

    async def test_follow_touches_every_camera_with_a_webrtc_session(
        self, nc: Client, nats_settings: Settings
    ) -> None:
        """``follow`` (the web server runs it over its WHEP feeds) marks each watched camera
        within its poll, and stops marking a camera once its session is gone."""
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, nats_settings.replace(streams={"viewer_ttl_s": TTL_S}))
        kv = await viewers_bucket(js)
        presence = ViewerPresence(TTL_S, asyncio.get_running_loop())
        await presence.start(js)
        sessions = {"gate", "yard"}
        task = asyncio.ensure_future(presence.follow(lambda: sessions))
        try:
            await _until(lambda: _all(is_watched(kv, "gate"), is_watched(kv, "yard")), 2.0)
            assert ((await kv.get("gate")).value or b"").startswith(b"webrtc ")
            sessions.discard("yard")
            await _until(lambda: _not(is_watched(kv, "yard")), 5.0)
            assert await is_watched(kv, "gate")
        finally:
            task.cancel()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _all(*checks: Awaitable[bool]) -> bool:
    return all([await c for c in checks])
