"""Following a KV bucket (core.kv_watch) against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from framepipe.core.kv_watch import KvFollow, kv_updates
from framepipe.core.topology import Names


class TestKvUpdates:
    """kv_updates: the current values, one None, then each change."""

    async def test_current_values_then_the_marker_then_changes(self, js: JetStreamContext) -> None:
        """Values at the watch's start come first, then None, then a put made after a read timed out."""
        kv = await js.key_value(Names.VIEWERS_BUCKET)
        await kv.put("early", b"1")
        watcher = await kv.watchall()
        seen: list[Any] = []

        async def read() -> None:
            async for entry in kv_updates(watcher, poll_s=0.1):
                seen.append(None if entry is None else (entry.key, entry.value))
                if len(seen) == 3:
                    return

        reading = asyncio.create_task(read())
        await asyncio.sleep(0.3)  # longer than poll_s: the reader has timed out and read again
        await kv.put("late", b"2")
        await asyncio.wait_for(reading, 5.0)
        await watcher.stop()
        assert seen == [("early", b"1"), None, ("late", b"2")]


class TestKvFollow:
    """KvFollow: a watcher and its task, ended together."""

    async def test_stop_ends_the_task_and_the_subscription(self, nc: Client, js: JetStreamContext) -> None:
        """After stop the task is done and the client holds no more subscriptions than before the watch."""
        kv = await js.key_value(Names.VIEWERS_BUCKET)
        subscriptions = len(nc._subs)
        follow = KvFollow()
        started = asyncio.Event()

        async def read(watcher: Any) -> None:
            async for _ in kv_updates(watcher, poll_s=0.1):
                started.set()

        follow.start(await kv.watchall(), read)
        await asyncio.wait_for(started.wait(), 5.0)
        assert follow.running
        assert len(nc._subs) > subscriptions
        await follow.stop()
        assert not follow.running
        assert len(nc._subs) == subscriptions

    async def test_a_second_start_is_refused(self, js: JetStreamContext) -> None:
        """One KvFollow follows one watcher: starting it again raises instead of leaking the first."""
        kv = await js.key_value(Names.VIEWERS_BUCKET)

        async def read(watcher: Any) -> None:
            async for _ in kv_updates(watcher):
                pass

        follow = KvFollow()
        follow.start(await kv.watchall(), read)
        other = await kv.watchall()
        try:
            with pytest.raises(RuntimeError, match="already following"):
                follow.start(other, read)
        finally:
            await follow.stop()
            await other.stop()

    async def test_stop_without_start_does_nothing(self) -> None:
        """Stopping a KvFollow that never started is harmless (a part that failed to start is stopped too)."""
        follow = KvFollow()
        await follow.stop()
        assert not follow.running
