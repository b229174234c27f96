"""Where an annotated GOP's time goes between the camera and the web server, stage by stage.

From the stages' ``gop.done``/``part.done`` log events (ISO timestamp at the end of the
handler, ``duration_ms`` = parse → process → publish → ack) and each GOP's
``captured_at`` (the gateway's publish to VIDEO): a stage's work on a GOP spans its
first start to its last end over the GOP's parts; its wait is from the previous
stage's end (for the decoder: ``captured_at``) to that start, i.e. the pull
consumer's fetch, queueing behind other GOPs and the bus hop. The last stage's end is
when the segment was in OUTPUT; the web server's own hold (its feed's clock) is the
rest of its capture → send delay (``bench/webrtc_latency.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import gop_done_events


def _p(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
    }


def breakdown(
    logs: Sequence[Path], captured: dict[int, float], camera: str, order: Sequence[str]
) -> dict[str, Any]:
    """Per stage in ``order``: wait and work (p50/p95/max seconds) over the GOPs every stage logged,
    and ``to_output_s``: captured_at → the last stage's end."""
    spans: dict[int, dict[str, list[float]]] = {}
    for event in gop_done_events(logs):
        stage, gop = event.get("stage"), event.get("gop")
        if event.get("camera") != camera or stage not in order or not isinstance(gop, int):
            continue
        end = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        start = end - float(event.get("duration_ms", 0.0)) / 1000
        span = spans.setdefault(gop, {}).setdefault(str(stage), [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    waits: dict[str, list[float]] = {stage: [] for stage in order}
    works: dict[str, list[float]] = {stage: [] for stage in order}
    totals: list[float] = []
    for gop, by_stage in sorted(spans.items()):
        if gop not in captured or any(stage not in by_stage for stage in order):
            continue
        previous = captured[gop]
        for stage in order:
            start, end = by_stage[stage]
            waits[stage].append(start - previous)
            works[stage].append(end - start)
            previous = end
        totals.append(previous - captured[gop])
    return {
        "gops": len(totals),
        "stages": {stage: {"wait_s": _p(waits[stage]), "work_s": _p(works[stage])} for stage in order},
        "to_output_s": _p(totals),
    }
