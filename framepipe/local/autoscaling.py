"""The local system's autoscaler: KEDA's formula on the consumers' lag, capped for one machine."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Protocol

import structlog

from framepipe.core.cluster_settings import StageScaling
from framepipe.core.errors import SetupError
from framepipe.core.loader import load_cluster_config
from framepipe.core.settings import ENV_PREFIX, Settings
from framepipe.core.topology import SCALED_STAGES
from framepipe.local.natscluster import NatsNodes
from framepipe.local.processes import Managed
from framepipe.scaling.autoscale import Autoscaler, cap_scaling
from framepipe.scaling.demand import CameraProfiles, configured_rates, expected_replicas, read_gop_rates
from framepipe.scaling.jsz import JszReader
from framepipe.scaling.output_modes import for_output_mode

log = structlog.get_logger("framepipe.supervisor")


class ScaledSystem(Protocol):
    """What the autoscaler reads and drives of the local system (supervisor.LocalSystem)."""

    settings: Settings
    server: NatsNodes | None
    monitor_url: str | None
    processes: list[Managed]

    def replicas(self, stage: str) -> list[Managed]: ...

    def scale(self, stage: str, count: int) -> None: ...


def build_autoscaler(system: ScaledSystem, scaling: StageScaling | None) -> Autoscaler:
    """See :meth:`LocalSystem.enable_autoscaling`."""
    if system.monitor_url is None:
        raise SetupError("autoscaling needs the NATS monitoring endpoint (start the system first)")
    if scaling is None:
        scaling = load_cluster_config(os.environ.get(f"{ENV_PREFIX}CONFIG") or None).scaling
    cap = system.settings.local.max_replicas or os.cpu_count() or 1
    scaling = for_output_mode(cap_scaling(scaling, cap), system.settings.output.mode)
    # Every node's endpoint: a consumer's counts are current on its leader only, and
    # node 0 may be the one that is down.
    reader = JszReader(system.monitor_url, nodes=tuple(system.server.monitor_urls) if system.server else ())

    def read_lags() -> dict[str, int | None]:
        return {stage: None if lag is None else lag.lag for stage, lag in reader.read().items()}

    # Feed-forward: the cameras this supervisor runs a gateway for, at the measured rates.
    rates = configured_rates(scaling, Path("bench/results/scaling.json"))

    demand_stages = tuple(s for s in rates if getattr(scaling, s).feed_forward)
    profiles = CameraProfiles()
    outage: list[float] = []  # when the camera rates became unreadable; empty while readable

    def read_demand() -> dict[str, float]:
        # Each running gateway's camera at the GOP rate it measured (FP_SOURCES).
        gateways = [m for m in system.processes if m.name.startswith("gateway-") and m.alive]
        cameras = [m.name.removeprefix("gateway-") for m in gateways]
        try:
            measured = asyncio.run(read_gop_rates(system.settings)) if cameras else {}
        except Exception as exc:  # noqa: BLE001 - NATS down: the lag trigger says so; assume 1 GOP/s
            if not outage:  # one line per outage, not one per poll
                outage.append(time.monotonic())
                log.warning(
                    "autoscale.camera_rates_unavailable",
                    error=str(exc) or type(exc).__name__,
                    assumed="1 GOP/s per camera until NATS answers again",
                )
            measured = {}
        else:
            if outage:
                log.info("autoscale.camera_rates_back", after_s=round(time.monotonic() - outage.pop(), 1))
        return expected_replicas(profiles.loads(cameras, measured), rates, scaling)

    autoscaler = Autoscaler(
        scaling,
        read_lags,
        lambda stage: len(system.replicas(stage)),
        system.scale,
        # No demand reads (a NATS connection a poll) where no stage has the demand trigger.
        read_demand=read_demand if demand_stages else None,
        demand_stages=demand_stages,
    )
    log.info(
        "autoscale.enabled",
        **{
            stage: f"{getattr(scaling, stage).min_replicas}..{getattr(scaling, stage).max_replicas}"
            f" lag/replica {getattr(scaling, stage).lag_threshold}"
            for stage in SCALED_STAGES
        },
    )
    return autoscaler
