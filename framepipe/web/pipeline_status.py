"""``/api/pipeline``: each stage's backlog (from its consumers) and live replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext

from framepipe.core import topology

#: live replicas per stage, from whatever runs the stages (the local supervisor's runtime
#: file, a cluster's API); the server itself knows no runtime.
ReplicaCount = Callable[[], dict[str, int]]


def no_replicas() -> dict[str, int]:
    return {}


async def pipeline_status(js: JetStreamContext, replicas: ReplicaCount) -> dict[str, Any]:
    """Per stage, not per consumer: the sink's second consumer (its gap notices) is part of the
    sink, not a stage of its own on the console. A missing consumer leaves its stage out."""
    stages: dict[str, dict[str, int]] = {}
    live = replicas()
    for spec in topology.consumer_specs():
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except Exception:  # noqa: BLE001 - a missing consumer shows as absent
            continue
        empty = {"lag": 0, "pending": 0, "ack_pending": 0, "waiting": 0}
        row = stages.setdefault(spec.stage, {**empty, "replicas": live.get(spec.stage, 0)})
        row["pending"] += info.num_pending or 0
        row["ack_pending"] += info.num_ack_pending or 0
        row["lag"] = row["pending"] + row["ack_pending"]
        row["waiting"] += info.num_waiting or 0
    return {"time": time.time(), "stages": stages}
