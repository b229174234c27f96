"""Backlog age: the oldest unacknowledged message of a consumer, as a real nats-server reports it."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from framepipe.core import backlog, bus
from framepipe.core.topology import Names, consumer_spec


async def _publish(js: JetStreamContext, stream: str, count: int) -> list[float]:
    """``count`` messages 0.2 s apart; their stored times (from the server) in order."""
    stored: list[float] = []
    for i in range(count):
        await bus.publish(js, Names.subject(stream, "cam"), b"x" * 10, {}, f"m{i}")
        info = await js.stream_info(stream)
        stored.append((await js.get_msg(stream, info.state.last_seq)).time.timestamp())  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
    return stored


class TestBacklogAge:
    """The age is now minus the stored time of the oldest message not yet acked."""

    @pytest.mark.parametrize("durable", [Names.DECODER, Names.INFERENCE])
    async def test_age_follows_the_oldest_unacked_message(
        self, nc: Client, js: JetStreamContext, durable: str
    ) -> None:
        """VIDEO (limits, ack floor + next_by_subj) and FRAMES (work queue, first_ts): the age
        is of message 1, then of message 2 once 1 is acked though 3 was acked first, then 0."""
        spec = consumer_spec(durable)
        now = time.time() + 10.0
        assert await backlog.sample(nc, js, spec, now) == backlog.Backlog(0, 0, 0.0)
        stored = await _publish(js, spec.stream, 3)
        found = await backlog.sample(nc, js, spec, now)
        assert (found.pending, found.ack_pending) == (3, 0)
        assert found.oldest_age_s == pytest.approx(now - stored[0], abs=0.002)

        sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        first, second, third = await sub.fetch(3, timeout=5)
        await third.ack_sync()  # out of order: the ack floor stays below message 1
        await first.ack_sync()
        found = await backlog.sample(nc, js, spec, now)
        assert (found.pending, found.ack_pending) == (0, 1)
        assert found.oldest_age_s == pytest.approx(now - stored[1], abs=0.002)

        await second.ack_sync()
        assert await backlog.sample(nc, js, spec, now) == backlog.Backlog(0, 0, 0.0)
