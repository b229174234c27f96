"""Following a KV bucket as it changes: a watcher's entries, read by a task of their own.

A nats-py watcher is an ordered consumer with a subscription on the client. Cancelling the
task that reads it leaves that subscription, and the server's consumer, behind until the
connection closes; :class:`KvFollow` ends both. The gallery (every analysis replica) and
the gateway's view of the instant viewers (``instant.<camera>``) follow their keys this way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from nats.errors import TimeoutError


async def kv_updates(watcher: Any, poll_s: float = 5.0) -> AsyncIterator[Any]:
    """A KV watcher's entries as they come, for ever: ``None`` once, at the end of the values
    that existed when the watch opened. A read that times out (nothing new) is read again."""
    while True:
        try:
            entry = await watcher.updates(timeout=poll_s)
        except TimeoutError:  # nats' own: nothing new within poll_s
            continue
        yield entry


class KvFollow:
    """One watcher and the task that follows it: :meth:`stop` ends the task, then the watcher."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, watcher: Any, follow: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        """Run ``follow(watcher)`` as a task (it reads ``kv_updates(watcher)``)."""
        if self._task is not None:
            raise RuntimeError("this KvFollow is already following a watcher")
        self._watcher = watcher
        self._task = asyncio.create_task(follow(watcher))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._watcher.stop()
            self._watcher = None
