"""The autoscaler's lag reader on a real 3-node JetStream cluster (local.natscluster).

In a cluster only a consumer's leader has its current counts, and node 0 (the
first endpoint) can be the node that is down: the reader asks every node's
monitoring port, keeps the leader's figures, and carries on, with one warning,
while a node does not answer.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from framepipe.core import bus
from framepipe.core.cluster_settings import StageScaling
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES, Names, stage_spec
from framepipe.local.natscluster import NatsNodes
from framepipe.local.supervisor import LocalSystem
from framepipe.scaling import autoscale, jsz
from framepipe.scaling.autoscale import Autoscaler
from framepipe.scaling.jsz import ConsumerLag, JszReader

pytestmark = pytest.mark.integration
DECODER = stage_spec(Names.DECODER).consumer
KEY = f"{DECODER.stream}/{DECODER.durable}"


@pytest.fixture(autouse=True)
def _fresh_jsz_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module logger cached under an earlier ``logs.configure`` can bypass ``capture_logs``."""
    monkeypatch.setattr(jsz, "log", structlog.get_logger("framepipe.autoscale"))
    monkeypatch.setattr(autoscale, "log", structlog.get_logger("framepipe.autoscale"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsNodes]:
    base = Settings().replace(local={"state_dir": str(tmp_path / "state"), "nats_auth": False})
    nodes = NatsNodes.local(base, tmp_path / "state", count=3)
    nodes.start(timeout=90.0)
    try:
        yield nodes
    finally:
        for index in range(3):
            nodes.signal(index, signal.SIGCONT)
        nodes.stop()


@pytest.fixture
async def cluster_js(cluster: NatsNodes, tmp_path: Path) -> AsyncIterator[tuple[Settings, JetStreamContext]]:
    """R3 topology; 5 GOPs in VIDEO, 2 of them fetched by the decoder's consumer and not acked."""
    settings = cluster.client_settings(
        Settings().replace(local={"state_dir": str(tmp_path / "state")}, nats={"ping_interval_s": 1.0})
    )
    nc = await bus.connect(settings, "test-jsz", retry_initial=False)
    js = nc.jetstream(timeout=10.0)
    await bus.ensure_topology(js, settings)
    for gop in range(5):
        subject = Names.subject(Names.VIDEO, "cam1")
        await bus.publish(js, subject, b"gop", {}, Names.msg_id("cam1", gop, "gateway"))
    sub = await js.pull_subscribe_bind(DECODER.durable, DECODER.stream)
    assert len(await sub.fetch(2, timeout=10)) == 2
    try:
        yield settings, js
    finally:
        await nc.close()


def read_until(reader: JszReader, want: tuple[int, int], timeout: float = 30.0) -> ConsumerLag:
    """Poll like the autoscaler until the decoder's figures are ``want`` (pending, unacked)."""
    deadline = time.monotonic() + timeout
    while True:
        found = reader.read((Names.DECODER,))[Names.DECODER]
        if found is not None and (found.num_pending, found.num_ack_pending) == want:
            return found
        assert time.monotonic() < deadline, f"last read {found}"
        time.sleep(0.3)


def consumer_leader(cluster: NatsNodes) -> str:
    reader = JszReader(cluster.monitor_url, nodes=tuple(cluster.monitor_urls), timeout=2.0)
    return read_until(reader, (3, 2)).leader


class TestJszReaderOnACluster:
    """JszReader with every node's endpoint, on a real 3-node cluster under faults."""

    async def test_leader_figures_from_any_first_node(self, cluster: NatsNodes, cluster_js: Any) -> None:
        """Whichever node is asked first, the figures are the leader's and its URL is kept."""
        nodes = tuple(cluster.monitor_urls)
        for first in nodes:
            reader = JszReader(first, nodes=nodes, timeout=2.0)
            found = await asyncio.to_thread(read_until, reader, (3, 2))
            leader_url = cluster.monitor_urls[cluster.index_of(found.leader)]
            assert reader.leaders[KEY] == leader_url

    async def test_node_0_killed_one_warning_then_back(self, cluster: NatsNodes, cluster_js: Any) -> None:
        """SIGKILL node 0 (the endpoint the supervisor names): polls still give the leader's
        figures, with one node_unreachable line over many polls, and one node_back after restart."""
        reader = JszReader(cluster.monitor_url, nodes=tuple(cluster.monitor_urls), timeout=2.0)
        await asyncio.to_thread(read_until, reader, (3, 2))
        with capture_logs() as logs:
            cluster.kill(0)
            found = await asyncio.to_thread(read_until, reader, (3, 2))
            for _ in range(5):
                again = await asyncio.to_thread(reader.read, (Names.DECODER,))
                assert again[Names.DECODER] is not None
            assert found.leader in ("n1", "n2")  # the new leader if n0 led it
            assert cluster.restart_crashed() == ["n0"]
            cluster.wait_healthy(60.0)
            await asyncio.to_thread(read_until, reader, (3, 2))
        events = [line["event"] for line in logs if line["event"].startswith("autoscale.node_")]
        assert events == ["autoscale.node_unreachable", "autoscale.node_back"], logs
        # If node 0 led the consumer, the election after the kill may leave it without a
        # leader for a poll or two: that is one unavailable line and one available line, not
        # one per poll.
        lag = [line["event"] for line in logs if line["event"].startswith("autoscale.lag_")]
        assert lag in ([], ["autoscale.lag_unavailable", "autoscale.lag_available"]), logs

    async def test_consumer_leader_hung_no_follower_figure_then_the_new_leader(
        self, cluster: NatsNodes, cluster_js: Any
    ) -> None:
        """SIGSTOP the consumer's leader: until a new leader answers the stage has no figure
        (one lag_unavailable line), never a follower's stale count; then the new leader's 5."""
        leader = await asyncio.to_thread(consumer_leader, cluster)
        stopped = cluster.index_of(leader)
        reader = JszReader(cluster.monitor_url, nodes=tuple(cluster.monitor_urls), timeout=1.0)
        await asyncio.to_thread(read_until, reader, (3, 2))
        cluster.signal(stopped, signal.SIGSTOP)
        try:
            with capture_logs() as logs:
                seen: list[ConsumerLag | None] = []
                deadline = time.monotonic() + 60
                while not seen or seen[-1] is None or seen[-1].leader == leader:
                    assert time.monotonic() < deadline, seen
                    seen.append((await asyncio.to_thread(reader.read, (Names.DECODER,)))[Names.DECODER])
            assert [lag.lag for lag in seen if lag is not None] == [5] * sum(lag is not None for lag in seen)
            assert seen[-1] is not None
            assert seen[-1].leader != leader
            assert reader.leaders[KEY] != cluster.monitor_urls[stopped]
            unavailable = [line for line in logs if line["event"] == "autoscale.lag_unavailable"]
            assert len(unavailable) <= 1, unavailable
            if None in seen:
                assert len(unavailable) == 1
                assert "leader" in unavailable[0]["error"]
        finally:
            cluster.signal(stopped, signal.SIGCONT)

    async def test_local_autoscaler_reads_every_node(
        self, cluster: NatsNodes, cluster_js: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """LocalSystem.enable_autoscaling's lag reader goes on after node 0 is killed."""
        settings, _ = cluster_js
        monkeypatch.chdir(tmp_path)  # no bench/results/scaling.json: lag only
        system = LocalSystem(settings, tmp_path / "system")
        system.server, system.monitor_url = cluster, cluster.monitor_url
        autoscaler = system.enable_autoscaling(StageScaling())
        assert (await asyncio.to_thread(autoscaler.read_lags))[Names.DECODER] == 5
        cluster.kill(0)
        deadline = time.monotonic() + 30
        while (lags := await asyncio.to_thread(autoscaler.read_lags))[Names.DECODER] != 5:
            assert time.monotonic() < deadline, lags
            await asyncio.sleep(0.3)

    async def test_every_node_down_one_line_each_not_one_per_poll(
        self, cluster: NatsNodes, cluster_js: Any
    ) -> None:
        """All three nodes killed for 6 polls: one node_unreachable per node, one
        metric_unavailable, KEDA's fallback replicas once the failures pass the threshold;
        after the restart one line each that it is back, and every stage back to its lag's count."""
        reader = JszReader(cluster.monitor_url, nodes=tuple(cluster.monitor_urls), timeout=1.0)
        counts = dict.fromkeys(SCALED_STAGES, 1)
        scaling = StageScaling()

        def read_lags() -> dict[str, int | None]:
            return {s: None if lag is None else lag.lag for s, lag in reader.read().items()}

        now = [0.0]
        autoscaler = Autoscaler(
            scaling, read_lags, counts.__getitem__, counts.__setitem__, clock=lambda: now[0]
        )
        await asyncio.to_thread(read_until, reader, (3, 2))
        with capture_logs() as logs:
            for index in range(3):
                cluster.kill(index)
            for _ in range(6):
                now[0] += 600.0  # past every stage's polling interval
                await asyncio.to_thread(autoscaler.step)
            during_outage = dict(counts)
            assert sorted(cluster.restart_crashed()) == ["n0", "n1", "n2"]
            cluster.wait_healthy(90.0)
            # Each consumer's leader is elected in its own time: poll until every stage has a
            # figure again (a stage without one holds its fallback count, as KEDA does).
            deadline = time.monotonic() + 60
            while counts != dict.fromkeys(SCALED_STAGES, 1) or reader.down:
                assert time.monotonic() < deadline, (counts, reader.down, reader.unavailable)
                now[0] += 600.0
                await asyncio.to_thread(autoscaler.step)
                await asyncio.sleep(0.3)
        assert during_outage == {s: getattr(scaling, s).fallback_replicas for s in SCALED_STAGES}
        events = [line["event"] for line in logs if line["event"].startswith("autoscale.")]
        assert events.count("autoscale.node_unreachable") == 3, events
        assert events.count("autoscale.metric_unavailable") == 1, events
        assert events.count("autoscale.node_back") == 3, events
        assert events.count("autoscale.metric_available") == 1, events
        blind = [line for line in logs if line["event"] == "autoscale.scaled" and line["lag"] is None]
        assert [line["reason"] for line in blind] == ["fallback"] * len(SCALED_STAGES), blind
