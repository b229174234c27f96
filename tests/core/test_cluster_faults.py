"""The bus layer's delivery guarantees on a real 3-node JetStream cluster under faults.

Each test runs a real :class:`Runner` (the work loop every stage uses) on the
decoder's durable consumer of an R3 VIDEO stream, relaying each input to FRAMES
with the stage's msg id, while a producer publishes GOPs the way the gateway
does (``bus.publish``, which waits out outages). A fault is injected mid-run;
the test then checks that VIDEO and FRAMES each hold every GOP exactly once and
that nothing is left pending: 0 GOPs lost, 0 duplicates, through the runner's
publish-then-ack rule and JetStream's msg-id de-duplication.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from framepipe.core import bus, messages
from framepipe.core.messages import Headers
from framepipe.core.runner import Done, Runner, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.local.natscluster import NatsNodes, node_name

GOPS = 40
CAMERA = "hall"


class RelayStage(Stage[messages.GapMessage]):
    """Reads the decoder's consumer and republishes each input to FRAMES under its msg id."""

    name: ClassVar[str] = Names.DECODER
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.DECODER)
    input_kind: ClassVar[type[messages.Message]] = messages.GapMessage

    async def process(self, message: messages.GapMessage, ctx: WorkContext) -> Done:
        subject = Names.subject(Names.FRAMES, message.camera)
        await ctx.publish(subject, message, Names.msg_id(message.camera, message.gop, self.name, 0))
        return Done(frames=1)


#: the bus module's logger, fresh for each test, so ``capture_logs`` sees its events.
pytestmark = pytest.mark.usefixtures("fresh_bus_logger")


@pytest.fixture
def cluster(nats_cluster: NatsNodes) -> NatsNodes:
    """The shared 3-node cluster (tests/conftest.py), under this module's shorter name."""
    return nats_cluster


@pytest.fixture
def cluster_settings(cluster: NatsNodes, tmp_path: Path) -> Settings:
    base = Settings().replace(
        local={"state_dir": str(tmp_path / "state")},
        nats={"ping_interval_s": 1.0},
        decoder={"ack_wait_s": 4.0, "retry_backoff_s": 0.2, "fetch_batch": 2},
    )
    return cluster.client_settings(base)


@pytest.fixture
async def cluster_js(cluster_settings: Settings) -> AsyncIterator[JetStreamContext]:
    nc: Client = await bus.connect(cluster_settings, "test-cluster", retry_initial=False)
    js = nc.jetstream(timeout=10.0)
    await bus.ensure_topology(js, cluster_settings)
    try:
        yield js
    finally:
        await nc.close()


#: How long one producer publish waits for its ack before it counts as waiting on the bus.
#: Shorter than every fault, so a publish stalled by a fault always times out and says so:
#: with the default 10 s a stalled publish to a quorum-less leader was simply acked once
#: the 8 s outage ended, and nothing said it had waited (seen twice in CI).
PUBLISH_TIMEOUT_S = 2.0

#: A fault: it receives the event that lets the producer go on, and sets it once the fault
#: is in place (the runner sets it afterwards too, for a fault that never does).
Fault = Callable[[asyncio.Event], Awaitable[None]]


async def produce(
    js: JetStreamContext, count: int, *, hold_at: int, go_on: asyncio.Event, pace_s: float = 0.1
) -> None:
    """What the gateway does per GOP: a msg-id publish that waits until it is stored.

    The producer holds before GOP ``hold_at`` until ``go_on`` is set (once the fault is in
    place), so that publishes always overlap the fault: on a loaded machine an unheld
    producer could finish all its GOPs before the fault began (seen in CI), and then
    nothing would wait on the broken bus."""
    for gop in range(count):
        if gop == hold_at:
            await go_on.wait()
        message = messages.GapMessage(camera=CAMERA, gop=gop, since=0.0, down_s=0.0)
        headers, body = messages.encode(message)
        subject = Names.subject(Names.VIDEO, CAMERA)
        msg_id = Names.msg_id(CAMERA, gop, "gateway")
        await bus.publish(js, subject, body, headers, msg_id, timeout=PUBLISH_TIMEOUT_S)
        await asyncio.sleep(pace_s)


async def stored_gops(js: JetStreamContext, stream: str) -> Counter[int]:
    """How many times each GOP is stored in ``stream`` (read from the stream leader)."""
    info = await js.stream_info(stream)
    seen: Counter[int] = Counter()
    if not info.state.messages:
        return seen
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        if raw.headers and raw.headers.get(Headers.CAMERA) == CAMERA:
            seen[int(raw.headers[Headers.GOP])] += 1
    return seen


async def leader_of(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None
    assert info.cluster.leader, info.cluster
    return info.cluster.leader


async def run_with_fault(
    js: JetStreamContext,
    settings: Settings,
    fault: Fault,
    *,
    fault_after: int = 10,
    timeout: float = 150.0,
) -> list[dict[str, Any]]:
    """Relay GOPS GOPs with ``fault`` injected after ``fault_after`` reached FRAMES; assert
    exactly-once, nothing pending; return the bus/stage log events seen meanwhile."""
    runner = Runner(RelayStage(settings), settings)
    with structlog.testing.capture_logs() as events:
        running = asyncio.create_task(runner.run(serve_health=False))
        fault_injected = asyncio.Event()
        producing = asyncio.create_task(produce(js, GOPS, hold_at=fault_after + 2, go_on=fault_injected))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(await _retrying(lambda: stored_gops(js, Names.FRAMES))) < fault_after:
            assert loop.time() < deadline, "no progress before the fault"
            await asyncio.sleep(0.2)
        await fault(fault_injected)  # it lets the producer go on once it is in place
        fault_injected.set()
        await asyncio.wait_for(producing, max(1.0, deadline - loop.time()))
        while len(await _retrying(lambda: stored_gops(js, Names.FRAMES))) < GOPS:
            assert loop.time() < deadline, "not every GOP reached FRAMES in time"
            await asyncio.sleep(0.5)
        # Held work is acked before the test looks at the consumer.
        while True:
            info = await _retrying(lambda: js.consumer_info(Names.VIDEO, Names.DECODER))
            if (info.num_pending, info.num_ack_pending) == (0, 0):
                break
            assert loop.time() < deadline, f"consumer still holds work: {info}"
            await asyncio.sleep(0.5)
        runner.request_stop()
        await asyncio.wait_for(running, 30)
    everything = Counter({gop: 1 for gop in range(GOPS)})
    assert await _retrying(lambda: stored_gops(js, Names.VIDEO)) == everything
    assert await _retrying(lambda: stored_gops(js, Names.FRAMES)) == everything
    return list(events)


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """A read right after a fault may meet an election: the test's own reads wait it out
    (bounded, so a cluster that never recovers fails the test instead of hanging it)."""
    return await bus.retry_transient(call, "test read", attempts=40)


def _publishes(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The ``name`` events of publishes (not of the test's own reads)."""
    return [e for e in events if e.get("event") == name and str(e.get("what")).startswith("publish")]


@pytest.mark.integration
class TestClusterFaults:
    async def test_kill_9_of_the_video_leader_and_its_restart(
        self, cluster: NatsNodes, cluster_settings: Settings, cluster_js: JetStreamContext
    ) -> None:
        """SIGKILL the node leading VIDEO mid-run, then restart it on its store: a new leader
        takes over, the restarted node catches up, every GOP is relayed exactly once."""
        killed: list[str] = []

        async def fault(in_place: asyncio.Event) -> None:
            leader = await leader_of(cluster_js, Names.VIDEO)
            killed.append(leader)
            cluster.kill(cluster.index_of(leader))
            in_place.set()
            await asyncio.sleep(3.0)
            assert await asyncio.to_thread(cluster.restart_crashed) == [leader]

        await run_with_fault(cluster_js, cluster_settings, fault)
        assert cluster.restarts == {killed[0]: 1}
        await asyncio.to_thread(cluster.wait_healthy, 60.0)

    async def test_a_hung_node_past_the_election_timeout_then_resumed(
        self, cluster: NatsNodes, cluster_settings: Settings, cluster_js: JetStreamContext
    ) -> None:
        """SIGSTOP the FRAMES leader for 12 s (raft elects after at most ~9 s without a
        heartbeat), then SIGCONT: work goes on meanwhile and nothing is lost or doubled."""
        stopped: list[str] = []

        async def fault(in_place: asyncio.Event) -> None:
            leader = await leader_of(cluster_js, Names.FRAMES)
            stopped.append(leader)
            cluster.signal(cluster.index_of(leader), signal.SIGSTOP)
            in_place.set()
            await asyncio.sleep(12.0)
            cluster.signal(cluster.index_of(leader), signal.SIGCONT)

        await run_with_fault(cluster_js, cluster_settings, fault)
        assert stopped
        await asyncio.to_thread(cluster.wait_healthy, 60.0)

    async def test_two_nodes_down_waits_in_one_line_and_carries_on_with_quorum(
        self, cluster: NatsNodes, cluster_settings: Settings, cluster_js: JetStreamContext
    ) -> None:
        """SIGKILL two of three nodes (no quorum) for 8 s: publishes wait, logging one
        ``bus.waiting`` line per waiting call (not one per retry), and resume when the
        nodes come back."""
        progress: list[int] = []

        async def fault(in_place: asyncio.Event) -> None:
            survivor = await leader_of(cluster_js, Names.ENCODE)  # any node will do
            victims = [i for i in range(3) if i != cluster.index_of(survivor)]
            progress.append(len(await stored_gops(cluster_js, Names.FRAMES)))
            for index in victims:
                cluster.kill(index)
            in_place.set()  # the producer's next publish meets a stream without quorum
            await asyncio.sleep(8.0)  # nothing may be read meanwhile: there is no quorum
            restarted = await asyncio.to_thread(cluster.restart_crashed)
            assert sorted(restarted) == sorted(node_name(cluster.nodes[i]) for i in victims)

        events = await run_with_fault(cluster_js, cluster_settings, fault)
        waiting, resumed = _publishes(events, "bus.waiting"), _publishes(events, "bus.resumed")
        assert waiting, "nothing said it was waiting for the bus"
        # One line when a call starts waiting and one when it resumes: a line per retry
        # (every <= 3 s through the outage) would outnumber the resumes.
        assert len(waiting) == len(resumed), (waiting, resumed)
        assert all("quorum" in e["reason"] or "reconnecting" in e["reason"] for e in waiting)
        assert progress

    async def test_rolling_restart_of_all_three_nodes(
        self, cluster: NatsNodes, cluster_settings: Settings, cluster_js: JetStreamContext
    ) -> None:
        """Restart the nodes one by one, each back healthy before the next, as a StatefulSet
        upgrade does: the run never stops and nothing is lost or doubled."""

        async def fault(in_place: asyncio.Event) -> None:
            in_place.set()  # the restarts happen while the producer runs
            for index in range(3):
                await asyncio.to_thread(cluster.nodes[index].stop)
                await asyncio.to_thread(cluster.restart_crashed)
                await asyncio.to_thread(cluster.wait_healthy, 60.0)

        await run_with_fault(cluster_js, cluster_settings, fault)
        assert sum(cluster.restarts.values()) == 3
