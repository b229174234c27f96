"""The local autoscaler's demand reader through a NATS outage: one line per outage."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from framepipe.core import bus
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.settings import Settings
from framepipe.local.autoscaling import build_autoscaler
from framepipe.local.natscluster import NatsNodes
from framepipe.local.natsserver import NatsServer
from framepipe.local.processes import Managed
from framepipe.scaling.demand import replica_target


@dataclasses.dataclass
class RunningGateways:
    """The part of the local system the autoscaler reads: one running gateway, no stages."""

    settings: Settings
    processes: list[Managed]
    monitor_url: str | None
    server: NatsNodes | None = None

    def replicas(self, stage: str) -> list[Managed]:
        return []

    def scale(self, stage: str, count: int) -> None:
        raise AssertionError("nothing is scaled here")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Managed]:
    """A live process named as a camera's gateway (what the demand reader counts)."""
    managed = Managed("gateway-hall", ["sleep", "60"], tmp_path / "gateway.log", restart=False)
    managed.spawn({})
    yield managed
    assert managed.process is not None
    managed.process.kill()
    managed.process.wait()


async def _topology(settings: Settings) -> None:
    nc = await bus.connect(settings, "test-topology", retry_initial=False)
    try:
        await bus.ensure_topology(nc.jetstream(), settings)
    finally:
        await nc.close()


class TestDemandOutage:
    def test_one_line_when_the_rates_become_unreadable_and_one_when_back(
        self, nats_server: NatsServer, nats_settings: Settings, gateway: Managed
    ) -> None:
        """NATS down for three polls: one ``camera_rates_unavailable`` line (each poll assumes
        1 GOP/s per camera), then one ``camera_rates_back`` once it answers again."""
        asyncio.run(_topology(nats_settings))  # FP_SOURCES exists, as on a running system
        scaling = StageScaling(decoder=ScalingSettings(feed_forward=True, gops_per_replica=2.0))
        system = RunningGateways(nats_settings, [gateway], nats_server.monitor_url)
        autoscaler = build_autoscaler(system, scaling)
        assert autoscaler.read_demand is not None
        with capture_logs() as events:
            nats_server.stop()
            down = [autoscaler.read_demand() for _ in range(3)]
            nats_server.start()
            back = autoscaler.read_demand()
        names = [e["event"] for e in events if e["event"].startswith("autoscale.camera_rates")]
        assert names == ["autoscale.camera_rates_unavailable", "autoscale.camera_rates_back"]
        assert all(d == down[0] for d in down)
        # one camera at the assumed 1 GOP/s, over what one replica is planned to carry
        assert down[0]["decoder"] == pytest.approx(1.0 / replica_target(scaling.decoder, 2.0))
        assert back["decoder"] == down[0]["decoder"]  # no rate measured yet: 1 GOP/s either way
