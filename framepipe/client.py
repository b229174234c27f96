"""A small async API for applications: a camera's detections (and events) from a given time.

::

    from framepipe.client import connect

    async with connect("nats://127.0.0.1:4222") as client:
        async for item in client.detections("lobby", since=time.time() - 60):
            print(item.time, item.message.gop, item.message.frames)

It reads the product streams (JSON, :mod:`framepipe.core.schemas`) through an
ordered consumer that acks nothing and keeps no state on the server, so any number
of applications read independently of the pipeline's own durable consumers. It
depends on :mod:`framepipe.core` only (an import-linter contract says so); other
languages use any NATS client and the schemas in ``docs/schemas/`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from framepipe.core import bus, messages
from framepipe.core.errors import ConfigError
from framepipe.core.schemas import EVENT_STREAMS, STREAM_KINDS, product_streams
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, validate_camera_name

#: the events stream, where this build has one (issue 14 adds it to the topology).
#: with ``follow=False``: how long to wait for a first message before deciding there is none.
IDLE_S = 2.0


@dataclass(frozen=True)
class Received:
    """One message of a product stream, as stored: when, where, and the decoded body."""

    stream: str
    stream_seq: int
    subject: str
    #: when JetStream stored it (UTC), floored to the microsecond: passed back as ``since`` it
    #: includes this message.
    time: datetime
    #: an envelope (DETECTIONS), or for EVENTS the event document (core/events.py's schema)
    message: messages.Message | dict[str, Any]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stored_time(msg: Msg) -> datetime:
    """The stored time from the ack subject's nanoseconds, floored to a microsecond.

    nats-py's ``metadata.timestamp`` goes through a float and may round *up* by a
    microsecond, which would make ``since=item.time`` skip the item itself.
    """
    tokens = (msg.reply or "").split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending> (9 tokens), or the
    # 11/12-token form with domain and account hash before the stream.
    index = 7 if len(tokens) == 9 else 9
    if len(tokens) > index and tokens[index].isdigit():
        return EPOCH + timedelta(microseconds=int(tokens[index]) // 1000)
    stamp = msg.metadata.timestamp
    return stamp.astimezone(UTC) if stamp else datetime.now(UTC)


def _start(since: datetime | float | None) -> dict[str, Any]:
    if since is None:
        return {"deliver_policy": DeliverPolicy.ALL}
    when = since if isinstance(since, datetime) else datetime.fromtimestamp(since, UTC)
    if when.tzinfo is None:
        raise ConfigError("since must be timezone-aware (or seconds since the epoch)")
    stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": stamp}


class FramepipeClient:
    """Reads product streams over one NATS connection (see :func:`connect`)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10.0)

    async def detections(
        self, camera: str, since: datetime | float | None = None, *, follow: bool = True
    ) -> AsyncIterator[Received]:
        """Detections and gap events of ``camera`` stored at or after ``since`` (None: all kept).

        ``follow=False`` ends after the last message stored so far; otherwise it waits for more.
        """
        async for item in self.read(Names.DETECTIONS, camera, since, follow=follow):
            yield item

    async def events(
        self, camera: str, since: datetime | float | None = None, *, follow: bool = True
    ) -> AsyncIterator[Received]:
        """Events of ``camera`` (the EVENTS stream: JSON documents, see core/events.py)."""
        async for item in self.read(Names.EVENTS, camera, since, follow=follow):
            yield item

    async def read(
        self, stream: str, camera: str, since: datetime | float | None = None, *, follow: bool = True
    ) -> AsyncIterator[Received]:
        """Any product stream, decoded and checked; a message this build cannot read is skipped
        only if its kind is unknown (a newer writer), never silently when malformed."""
        if stream not in {spec.name for spec in product_streams()}:
            raise ConfigError(f"{stream} is not a product stream applications read")
        kinds = {cls.KIND: cls for cls in STREAM_KINDS[stream]}
        subject = Names.subject(stream, validate_camera_name(camera))
        config = ConsumerConfig(**_start(since))
        sub = await self.js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
        try:
            first = True
            while True:
                try:
                    wait = None if follow else (IDLE_S if first else IDLE_S / 4)
                    msg = await sub.next_msg(timeout=wait)
                except (TimeoutError, nats.errors.TimeoutError):
                    if follow:
                        continue
                    return
                first = False
                headers = msg.headers or {}
                kind = kinds.get(headers.get(messages.Headers.KIND, ""))
                if stream in EVENT_STREAMS:
                    meta = msg.metadata
                    yield Received(
                        stream, meta.sequence.stream, msg.subject, _stored_time(msg), json.loads(msg.data)
                    )
                elif kind is not None:
                    meta = msg.metadata
                    yield Received(
                        stream,
                        meta.sequence.stream,
                        msg.subject,
                        _stored_time(msg),
                        messages.decode(headers, msg.data, kind),
                    )
                if not follow and msg.metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


@contextlib.asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    user: str = "",
    password: str = "",
    tls_ca: str = "",
    settings: Settings | None = None,
) -> AsyncIterator[FramepipeClient]:
    """A client connected to ``url`` (or to ``settings.nats``: the local run's by default)."""
    base = settings or Settings()
    if url is not None:
        base = base.replace(nats={"url": url, "user": user, "password": password, "tls_ca": tls_ca})
    nc = await bus.connect(base, "framepipe-client", retry_initial=False)
    try:
        yield FramepipeClient(nc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5.0)
