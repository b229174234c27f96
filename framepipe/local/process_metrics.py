"""The Prometheus metrics of the local stage processes (``framepipe status``): each process's
/metrics port from its log, a scrape, and the sums and quantiles the status tables show."""

from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from framepipe.core.topology import Names
from framepipe.local.runtime import Runtime


def live_processes(runtime: Runtime | None) -> Iterator[tuple[str, str, Path]]:
    """(process name, stage, log file) of each live local stage process."""
    for proc in runtime.live_stage_processes() if runtime else ():
        yield proc.name, proc.kind, Path(proc.log)


def scrape_process(log_file: Path) -> dict[str, list[tuple[dict[str, str], float]]] | None:
    """A process's /metrics (port from its log), or None while it starts or stops."""
    port = metrics_port_from_log(log_file)
    if port is None:
        return None
    try:
        return scrape(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return None


def inference_backends(runtime: Runtime | None) -> list[dict[str, str]]:
    """Backend, device, precision and model of each live local inference process, from its
    ``framepipe_inference_backend_info`` metric (what really runs, after any fallback)."""
    found: list[dict[str, str]] = []
    for name, stage, log_file in live_processes(runtime):
        samples = scrape_process(log_file) if stage == Names.INFERENCE else None
        if samples is None:
            continue  # not inference, or starting/stopping: its row is simply absent this time
        for labels, value in samples.get("framepipe_inference_backend_info", []):
            if value == 1:
                found.append(
                    {"process": name, **{k: labels.get(k, "") for k in BACKEND_FIELDS}},
                )
    return found


BACKEND_FIELDS = ("backend", "device", "precision", "model")


def metrics_port_from_log(log_file: Path) -> int | None:
    """The /metrics port a stage process logged last (``stage.health``), if any."""
    port = None
    try:
        with open(log_file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if '"stage.health"' in line:
                    with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError, ValueError):
                        port = int(json.loads(line)["port"])
    except OSError:
        return None
    return port


def scrape(url: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text from ``url`` → {sample name: [(labels, value), ...]}."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def sample_value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample_labels, value in samples.get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' estimate from cumulative ``{le: count}`` buckets (linear within a bucket)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            width = count - previous_count
            return previous_bound + (bound - previous_bound) * (
                (rank - previous_count) / width if width else 1
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def stage_metrics(runtime: Runtime | None) -> dict[str, dict[str, Any]]:
    """Per stage: live replicas, GOPs done and ``framepipe_process_seconds`` buckets, summed."""
    stages: dict[str, dict[str, Any]] = {}
    for _, stage, log_file in live_processes(runtime):
        entry = stages.setdefault(stage, {"replicas": 0, "gops": 0.0, "buckets": {}, "rate": 0.0})
        entry["replicas"] += 1
        samples = scrape_process(log_file)
        if samples is None:
            continue
        gops = sample_value(samples, "framepipe_gops_total", stage=stage)
        entry["gops"] += gops
        started = sample_value(samples, "process_start_time_seconds")
        if started > 0:
            entry["rate"] += gops / max(time.time() - started, 1.0)
        for labels, value in samples.get("framepipe_process_seconds_bucket", []):
            if labels.get("stage") == stage:
                le = float(labels["le"])
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + value
    return stages
