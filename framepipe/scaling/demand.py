"""Feed-forward demand: the replicas each stage needs for the cameras that are registered.

Lag-based scaling reacts only once a queue has built. The camera registry says
earlier how much work is coming: each camera sends ``fps / gop_frames`` GOPs a
second, and a replica of a stage has a measured throughput in GOPs a second
(``bench/results/scaling.json``, ``framepipe scale simulate --rate``). So

    expected replicas = Σ camera GOPs/s ÷ (per-replica GOPs/s × utilization)

with ``utilization`` (``[scaling.<stage>] feed_forward_utilization``) the share
of a replica the plan spends, leaving headroom for what the estimate misses.
The figure is fractional on purpose: the HPA rounds ``ceil(value / 1)`` itself,
and a fraction keeps its tolerance band meaningful.

The same rule runs in three places: the ``metrics-api`` trigger of each
ScaledObject reads :func:`demand_document` over HTTP (``/demand`` of the
web server's health port, see docs/autoscaling.md), the local supervisor's
autoscaler calls :func:`expected_replicas` directly, and the simulator
computes it from the load curve's camera count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepipe.core.cluster_settings import StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.topology import SCALED_STAGES

#: a camera's default GOP rate: 30 fps in 1-second GOPs (the bundled curves' cameras).
DEFAULT_GOPS_PER_S = 1.0


@dataclass(frozen=True)
class CameraLoad:
    """One registered camera's work, in GOP messages a second."""

    name: str
    gops_per_s: float = DEFAULT_GOPS_PER_S


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
        out[stage] = round(total / (rate * settings.feed_forward_utilization), 3)
    return out


def demand_document(cameras: list[CameraLoad], replicas: Mapping[str, float]) -> dict[str, Any]:
    """What ``/demand`` serves; KEDA's metrics-api trigger reads ``stages.<stage>.replicas``."""
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
