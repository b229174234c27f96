"""Feed-forward demand: the replicas each stage needs for the cameras that are registered.

Lag-based scaling reacts only once a queue has built. The camera registry says
earlier how much work is coming: each camera sends ``fps / gop_frames`` GOPs a
second (measured by its gateway from the stream's timestamps and kept in its
source state, :class:`CameraProfiles`; 1 GOP/s until it has a figure), and a
replica of a stage has a measured throughput in GOPs a second
(``bench/results/scaling.json``, ``framepipe scale simulate --rate``). So

    expected replicas = Σ camera GOPs/s ÷ (per-replica GOPs/s × utilization)

with ``utilization`` (``[scaling.<stage>] feed_forward_utilization``) the share
of a replica the plan spends, leaving headroom for what the estimate misses.
The figure is fractional on purpose: the HPA rounds ``ceil(value / 1)`` itself,
and a fraction keeps its tolerance band meaningful.

The same rule runs in three places. In the cluster, ``framepipe scale demand
--serve`` (scaling/demand_server.py) serves :func:`demand_document` of the
running cameras over HTTP, and each ScaledObject's ``metrics-api`` trigger reads
its ``gops_per_s`` against a per-replica target of :func:`replica_target`, so
the HPA's ``ceil(gops_per_s / target)`` is :func:`expected_replicas`. The local
supervisor's autoscaler calls :func:`expected_replicas` directly, and the
simulator computes it from the load curve's camera count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from framepipe.core import bus
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import SCALED_STAGES, Names

log = structlog.get_logger("framepipe.demand")

#: a camera's default GOP rate: 30 fps in 1-second GOPs (the bundled curves' cameras).
DEFAULT_GOPS_PER_S = 1.0
#: a running camera whose gateway has not saved its state for this long (it saves one per
#: GOP) is taken to be gone: its gateway died without saying so (a SIGKILL, a lost node).
STALE_AFTER_S = 60.0


@dataclass(frozen=True)
class CameraLoad:
    """One registered camera's work, in GOP messages a second."""

    name: str
    gops_per_s: float = DEFAULT_GOPS_PER_S


class CameraProfiles:
    """Each camera's load from its measured GOP rate (``SourceState.gops_per_s``).

    A camera without a figure yet (its gateway has not cut a GOP, or its state could
    not be read) counts as :data:`DEFAULT_GOPS_PER_S`, said once per camera in one
    log line rather than once per poll.
    """

    def __init__(self) -> None:
        self._assumed: set[str] = set()

    def loads(self, cameras: Iterable[str], measured: Mapping[str, float]) -> list[CameraLoad]:
        out = []
        for name in cameras:
            rate = measured.get(name, 0.0)
            if rate > 0:
                self._assumed.discard(name)
                out.append(CameraLoad(name, rate))
                continue
            if name not in self._assumed:
                self._assumed.add(name)
                log.info(
                    "demand.rate_assumed",
                    camera=name,
                    gops_per_s=DEFAULT_GOPS_PER_S,
                    reason="its gateway has not measured a GOP rate yet",
                    what_to_do="nothing: the measured rate replaces it once the camera sends GOPs",
                )
            out.append(CameraLoad(name))
        return out


async def _source_states(js: JetStreamContext) -> list[SourceState]:
    kv = await js.key_value(Names.SOURCES_BUCKET)
    out = []
    for key in await bus.bucket_keys(js, Names.SOURCES_BUCKET):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue  # removed meanwhile
        if entry.value:
            out.append(SourceState.from_json(entry.value))
    return out


async def measured_gop_rates(js: JetStreamContext) -> dict[str, float]:
    """Camera → measured GOPs/s, from every source state in ``FP_SOURCES`` that has one."""
    return {state.camera: state.gops_per_s for state in await _source_states(js) if state.gops_per_s > 0}


async def running_cameras(
    js: JetStreamContext, *, now: float | None = None, stale_after_s: float = STALE_AFTER_S
) -> dict[str, float]:
    """The cluster's camera registry: camera → measured GOPs/s (0: not measured yet) of every
    camera whose gateway runs. A gateway stores ``running`` when it opens its source and on
    every GOP; a removed camera's gateway stores ``stopped`` as it exits, an ended file
    ``ended``, a given-up source ``failed``, a lost one ``reconnecting`` (it sends nothing
    then); a ``running`` state older than ``stale_after_s`` belongs to a gateway that died."""
    now = time.time() if now is None else now
    return {
        state.camera: state.gops_per_s
        for state in await _source_states(js)
        if state.state == "running" and now - state.updated_at <= stale_after_s
    }


async def read_gop_rates(settings: Settings) -> dict[str, float]:
    """:func:`measured_gop_rates` over a connection of its own (the supervisor's poller)."""
    nc = await bus.connect(settings, "framepipe-demand", retry_initial=False)
    try:
        return await measured_gop_rates(nc.jetstream(timeout=5.0))
    finally:
        await nc.close()


def replica_target(settings: ScalingSettings, per_replica_gops_per_s: float) -> float:
    """GOPs/s one replica is planned to carry: its measured rate × ``feed_forward_utilization``.
    The HPA target of the cluster's demand trigger, and the divisor of :func:`expected_replicas`."""
    return per_replica_gops_per_s * settings.feed_forward_utilization


def expected_replicas(
    cameras: Iterable[CameraLoad],
    per_replica_gops_per_s: Mapping[str, float],
    scaling: StageScaling,
) -> dict[str, float]:
    """Each scaled stage's expected replicas (fractional) for ``cameras``.

    A stage without a measured rate, or with ``feed_forward`` off, is left out:
    its demand trigger reports nothing rather than a guess.
    """
    total = sum(camera.gops_per_s for camera in cameras)
    out: dict[str, float] = {}
    for stage in SCALED_STAGES:
        settings = getattr(scaling, stage)
        rate = per_replica_gops_per_s.get(stage, 0.0)
        if not settings.feed_forward or rate <= 0:
            continue
        out[stage] = round(total / replica_target(settings, rate), 3)
    return out


def demand_document(cameras: list[CameraLoad], replicas: Mapping[str, float]) -> dict[str, Any]:
    """What ``/demand`` serves. KEDA's metrics-api triggers read ``gops_per_s`` (the same
    figure for every stage; each ScaledObject has its stage's :func:`replica_target`);
    ``stages`` holds the expected replicas where the server knows the stages' rates."""
    return {
        "cameras": len(cameras),
        "gops_per_s": round(sum(c.gops_per_s for c in cameras), 3),
        "stages": {stage: {"replicas": value, "ceil": math.ceil(value)} for stage, value in replicas.items()},
    }


def load_rates(path: Path) -> dict[str, float]:
    """Per-replica GOPs/s from the scaling benchmark's report (``summary.per_replica``)."""
    try:
        measured = json.loads(path.read_text())["summary"]["per_replica"]
        return {stage: float(measured[stage]["gops_per_s"]) for stage in SCALED_STAGES if stage in measured}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run `make bench` or set the stages' rates") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path} has no summary.per_replica.<stage>.gops_per_s: re-run `make bench`"
        ) from None


def configured_rates(scaling: StageScaling, measured: Path | None = None) -> dict[str, float]:
    """Per-replica GOPs/s: ``[scaling.<stage>] gops_per_replica`` where set, else the
    benchmark's figure from ``measured`` if that file exists (the local system)."""
    from_file = load_rates(measured) if measured is not None and measured.is_file() else {}
    rates = {}
    for stage in SCALED_STAGES:
        rate = getattr(scaling, stage).gops_per_replica or from_file.get(stage, 0.0)
        if rate > 0:
            rates[stage] = rate
    return rates
