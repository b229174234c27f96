"""Slow stages against a real nats-server: heartbeats beat ack_wait, max_ack_pending bounds what is held,
in_flight overlaps waits.

A real :class:`Runner` drives a real :class:`Stage` defined here, bound to the
decoder's durable consumer on VIDEO with a short ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from framepipe.core import bus, messages
from framepipe.core.runner import Done, Runner, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.stages.sink import OutputWriter, Sink

ACK_WAIT_S = 1.0


class SlowStage(Stage[messages.GapMessage]):
    """Takes ``delay_s`` per message, or waits for ``release``; records what it saw."""

    name: ClassVar[str] = Names.DECODER
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.DECODER)
    input_kind: ClassVar[type[messages.Message]] = messages.GapMessage

    def __init__(self, settings: Settings, delay_s: float = 0.0) -> None:
        super().__init__(settings)
        self.delay_s = delay_s
        self.release = asyncio.Event()
        self.seen: list[tuple[int, int]] = []  # (gop, deliveries)
        self.in_process = 0
        self.peak = 0

    async def process(self, message: messages.GapMessage, ctx: WorkContext) -> Done:
        self.in_process += 1
        self.peak = max(self.peak, self.in_process)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            else:
                await self.release.wait()
            self.seen.append((message.gop, ctx.deliveries))
        finally:
            self.in_process -= 1
        return Done()


def _settings(settings: Settings, **decoder: object) -> Settings:
    return settings.replace(decoder={"ack_wait_s": ACK_WAIT_S, **decoder})


async def _publish(js: JetStreamContext, settings: Settings, count: int) -> None:
    await bus.ensure_topology(js, settings)
    for gop in range(count):
        headers, body = messages.encode(messages.GapMessage(camera="slow", gop=gop, since=0.0, down_s=0.0))
        await bus.publish(js, Names.subject(Names.VIDEO, "slow"), body, headers, f"slow:{gop}:gateway")


async def _assert_all_acked_once(js: JetStreamContext) -> None:
    """Nothing left pending or unacked on the decoder's consumer, and nothing redelivered."""
    info = await js.consumer_info(Names.VIDEO, Names.DECODER)
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s")
        await asyncio.sleep(0.05)


async def test_work_longer_than_ack_wait_is_not_redelivered(nc: Client, nats_settings: Settings) -> None:
    """Each message takes 2.2× ack_wait and the second waits in the runner behind the
    first; the runner's in_progress heartbeats keep both from redelivery: each is
    processed once, on its first delivery. A bare subscriber that does the same
    without heartbeats gets the message again (the control)."""
    settings = _settings(nats_settings, fetch_batch=2, in_flight=1, max_ack_pending=4)

    js = nc.jetstream(timeout=5.0)
    await _publish(js, settings, 1)
    bare = await js.pull_subscribe_bind(durable=Names.DECODER, stream=Names.VIDEO)
    (first,) = await bare.fetch(1, timeout=5.0)
    await asyncio.sleep(ACK_WAIT_S * 1.6)  # no in_progress: the server takes it back
    (again,) = await bare.fetch(1, timeout=5.0)
    assert again.metadata.sequence.stream == first.metadata.sequence.stream
    assert again.metadata.num_delivered == 2
    await again.ack_sync()
    await bare.unsubscribe()

    await _publish(js, settings, 3)  # gop 0 is a duplicate msg id: two new messages
    stage = SlowStage(settings, delay_s=ACK_WAIT_S * 2.2)
    runner = Runner(stage, settings)
    task = asyncio.create_task(runner.run(serve_health=False))
    await _until(lambda: len(stage.seen) >= 2, timeout=15.0)
    await asyncio.sleep(ACK_WAIT_S * 1.5)  # a redelivery would show up here
    runner.request_stop()
    await asyncio.wait_for(task, 10.0)
    assert stage.seen == [(1, 1), (2, 1)]
    await _assert_all_acked_once(js)


async def test_max_ack_pending_bounds_what_replicas_hold(nc: Client, nats_settings: Settings) -> None:
    """Three replicas that fetch 2 at a time while every message blocks: the consumer
    hands out at most max_ack_pending (3) messages in all, the rest wait on the server,
    not in replica memory; once released every message is processed exactly once."""
    # ack_wait well above the runner's 1 s fetch wait: a fetch that returns short holds
    # its messages for that long before they are heartbeated (with ack_wait <= 1 s the
    # server would redeliver them to another replica meanwhile).
    settings = _settings(nats_settings, fetch_batch=2, in_flight=2, max_ack_pending=3, ack_wait_s=4.0)
    total = 8

    js = nc.jetstream(timeout=5.0)
    await _publish(js, settings, total)
    stages = [SlowStage(settings) for _ in range(3)]
    runners = [Runner(stage, settings) for stage in stages]
    tasks = [asyncio.create_task(r.run(serve_health=False)) for r in runners]
    await _until(lambda: sum(s.in_process for s in stages) >= 3, timeout=10.0)
    await asyncio.sleep(1.5)  # several more fetch rounds: none may get a fourth
    assert sum(len(r._held) for r in runners) == 3
    assert all(len(r._held) <= 3 for r in runners)
    info = await js.consumer_info(Names.VIDEO, Names.DECODER)
    assert info.num_ack_pending == 3
    assert info.num_pending == total - 3
    for stage in stages:
        stage.release.set()
    await _until(lambda: sum(len(s.seen) for s in stages) >= total, timeout=15.0)
    for runner in runners:
        runner.request_stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 10.0)
    gops = sorted(gop for s in stages for gop, _ in s.seen)
    assert gops == list(range(total))
    assert max(s.peak for s in stages) <= 3
    info = await js.consumer_info(Names.VIDEO, Names.DECODER)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


class OverlappingStage(Stage[messages.GapMessage]):
    """Per message: CPU work on the stage's worker thread, then a wait like a publish's ack."""

    name: ClassVar[str] = Names.DECODER
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.DECODER)
    input_kind: ClassVar[type[messages.Message]] = messages.GapMessage

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.events: list[tuple[str, int]] = []
        self.working = 0
        self.peak_working = 0
        self.in_process = 0
        self.peak_in_process = 0

    def _work(self, gop: int) -> None:
        self.working += 1
        self.peak_working = max(self.peak_working, self.working)
        self.events.append(("work", gop))
        threading.Event().wait(0.2)
        self.working -= 1

    async def process(self, message: messages.GapMessage, ctx: WorkContext) -> Done:
        self.in_process += 1
        self.peak_in_process = max(self.peak_in_process, self.in_process)
        await self.offload(self._work, message.gop)
        self.events.append(("wait", message.gop))
        await asyncio.sleep(0.4)
        self.events.append(("done", message.gop))
        self.in_process -= 1
        return Done()


async def test_in_flight_overlaps_waits_and_keeps_offloaded_work_serial(
    nc: Client, nats_settings: Settings
) -> None:
    """With in_flight = 2 the runner starts the next message while the previous one waits
    on the bus (its work begins before the other's wait ends), never holds more than 2,
    and the work ``offload``ed to the stage's thread never runs twice at once; every
    message is still acked once."""
    settings = _settings(nats_settings, fetch_batch=4, in_flight=2, ack_wait_s=10.0)
    total = 5

    js = nc.jetstream(timeout=5.0)
    await _publish(js, settings, total)
    stage = OverlappingStage(settings)
    runner = Runner(stage, settings)
    task = asyncio.create_task(runner.run(serve_health=False))
    await _until(lambda: sum(kind == "done" for kind, _ in stage.events) >= total, timeout=20.0)
    runner.request_stop()
    await asyncio.wait_for(task, 10.0)
    assert stage.peak_in_process == 2
    assert stage.peak_working == 1
    order = stage.events
    overlapped = [
        gop
        for gop in range(total)
        if ("work", gop) in order
        and any(
            order.index(("wait", other)) < order.index(("work", gop)) < order.index(("done", other))
            for other in range(total)
            if other != gop
        )
    ]
    assert overlapped, order
    await _assert_all_acked_once(js)


def test_stage_cap_bounds_in_flight(tmp_path: Path) -> None:
    """A stage that must not overlap itself (the sink) runs one message at a time even
    when its section asks for more (no server: the window is decided before any fetch)."""
    settings = Settings().replace(sink={"output_dir": str(tmp_path / "output"), "in_flight": 4})
    sink = Sink(settings, OutputWriter(settings))
    assert Runner(sink, settings).window() == 1
    three = _settings(settings, in_flight=3)
    assert Runner(OverlappingStage(three), three).window() == 3
