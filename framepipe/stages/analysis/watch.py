"""The gallery as one analysis replica sees it: the ``FP_FACES`` bucket, watched.

The watch delivers every current record first, then each put or delete as it
happens, so an enrolment reaches every replica within a round trip; the matrix
of :class:`GalleryIndex` is rebuilt once after the initial records and once per
change (10 000 people: ~10 ms).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.js import JetStreamContext

from framepipe.core.errors import SchemaError
from framepipe.core.gallery import GalleryIndex, Person
from framepipe.core.kv_watch import KvFollow, kv_updates
from framepipe.core.topology import Names

log = structlog.get_logger("framepipe.analysis")


class GalleryWatch:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.people: dict[str, Person] = {}
        self.index = GalleryIndex([], threshold)
        self.loaded = asyncio.Event()
        self._watching = KvFollow()

    async def start(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        kv = await js.key_value(Names.FACES_BUCKET)
        watcher = await kv.watchall()
        self._watching.start(watcher, self._follow)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout)

    async def stop(self) -> None:
        """End the watch: the task and its ordered consumer."""
        await self._watching.stop()

    async def _follow(self, watcher: object) -> None:
        initial = True
        async for entry in kv_updates(watcher):
            if entry is None:  # the end of the records that existed at start
                initial = False
                self._rebuild()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.people.pop(entry.key, None)
            else:
                try:
                    self.people[entry.key] = Person.from_json(entry.value)
                except SchemaError as exc:
                    log.warning(
                        "gallery.bad_record",
                        key=entry.key,
                        error=str(exc),
                        detail="re-enrol the person with `framepipe faces enroll`",
                    )
                    continue
            if not initial:
                self._rebuild()

    def _rebuild(self) -> None:
        self.index = GalleryIndex(list(self.people.values()), self.threshold)
        self.loaded.set()
        log.info("gallery.loaded", people=len(self.index))
