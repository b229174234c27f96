"""Viewer presence on a real nats-server: the web server's touches keep a camera's
FP_VIEWERS key alive, and the bucket's TTL ends it once nobody touches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import structlog
from nats.aio.client import Client
from structlog.testing import capture_logs

from framepipe.core import bus, viewers
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.core.viewers import ViewerWatch, is_watched, mark_watched, viewers_bucket
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
        sessions = {("gate", "annotated"), ("yard", "annotated")}
        task = asyncio.ensure_future(presence.follow(lambda: sessions))
        try:
            await _until(lambda: _all(is_watched(kv, "gate"), is_watched(kv, "yard")), 2.0)
            assert ((await kv.get("gate")).value or b"").startswith(b"webrtc ")
            sessions.discard(("yard", "annotated"))
            await _until(lambda: _not(is_watched(kv, "yard")), 5.0)
            assert await is_watched(kv, "gate")
        finally:
            task.cancel()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _all(*checks: Awaitable[bool]) -> bool:
    return all([await c for c in checks])


class TestViewerWatch:
    """ViewerWatch (the gateway's view of instant.<camera>) on a real nats-server."""

    async def test_watched_from_a_put_until_a_delete_or_the_ttl(
        self, nc: Client, nats_settings: Settings
    ) -> None:
        """No key: not watched; a put is seen within a round trip; a delete ends it at once;
        a put with no refresh counts for the TTL (an expiry sends no message); stop leaves
        no subscription behind."""
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, nats_settings.replace(streams={"viewer_ttl_s": TTL_S}))
        kv = await viewers_bucket(js)
        now = [100.0]
        subscriptions = len(nc._subs)
        watch = ViewerWatch("gate", TTL_S, clock=lambda: now[0])
        await watch.start(js)
        try:
            assert not watch.watched
            await mark_watched(kv, "gate", "test", view="annotated")  # the other view: not this one
            await mark_watched(kv, "yard", "test", view="instant")  # another camera
            await asyncio.sleep(0.3)
            assert not watch.watched
            await mark_watched(kv, "gate", "test", view="instant")
            await _until(lambda: _true(watch.watched), 2.0)
            await kv.delete(Names.viewer_key("gate", "instant"))
            await _until(lambda: _true(not watch.watched), 2.0)
            await mark_watched(kv, "gate", "test", view="instant")
            await _until(lambda: _true(watch.watched), 2.0)
            now[0] += TTL_S * 0.9
            assert watch.watched
            now[0] += TTL_S * 0.2
            assert not watch.watched
        finally:
            await watch.stop()
        assert len(nc._subs) == subscriptions  # the watch's ordered consumer went with it

    async def test_a_key_there_before_the_watch_counts_at_start(
        self, nc: Client, nats_settings: Settings
    ) -> None:
        """A viewer who came before the gateway: watched as soon as start returns."""
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, nats_settings)
        await mark_watched(await viewers_bucket(js), "door", "test", view="instant")
        watch = ViewerWatch("door", 10.0)
        await watch.start(js)
        try:
            assert watch.watched
        finally:
            await watch.stop()

    async def test_no_bucket_watched_always_with_one_warning(
        self, nc: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without FP_VIEWERS (no `framepipe setup`), the view counts as watched: one warning."""
        # A module logger cached under an earlier logs.configure can bypass capture_logs.
        monkeypatch.setattr(viewers, "log", structlog.get_logger("framepipe.viewers"))
        js = nc.jetstream(timeout=10.0)
        watch = ViewerWatch("door", 10.0)
        with capture_logs() as logs:
            await watch.start(js)
        assert watch.watched
        warnings = [line for line in logs if line["event"] == "viewers.watch_failed"]
        assert len(warnings) == 1, logs
        assert "framepipe setup" in warnings[0]["detail"]


async def _true(value: bool) -> bool:
    return value
