"""``framepipe status``: streams, consumer backlog and local processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from framepipe.core import bus, topology
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState, read_source_state, redact
from framepipe.core.topology import Names
from framepipe.local.cameras import CameraSpec
from framepipe.local.natscluster import stream_placement
from framepipe.local.process_metrics import (
    BACKEND_FIELDS,
    histogram_quantile,
    inference_backends,
    live_processes,
    metrics_port_from_log,
    sample_value,
    scrape,
    scrape_process,
    stage_metrics,
)
from framepipe.local.runtime import Runtime, read_runtime

#: moved to :mod:`.process_metrics`; still importable from here.
__all__ = [
    "BACKEND_FIELDS",
    "Watch",
    "camera_lines",
    "camera_states",
    "collect_status",
    "histogram_quantile",
    "inference_backends",
    "list_camera_states",
    "live_processes",
    "metrics_port_from_log",
    "render_status",
    "sample_value",
    "scrape",
    "scrape_process",
    "stage_metrics",
    "stage_rows",
    "watch_status",
]


async def collect_status(settings: Settings, runtime: Runtime | None) -> dict[str, Any]:
    nc = await bus.connect(settings, "framepipe-status", retry_initial=False)
    js = nc.jetstream(timeout=5.0)
    report: dict[str, Any] = {"nats_url": settings.nats.url, "streams": [], "consumers": [], "processes": []}
    try:
        for spec in topology.STREAMS:
            try:
                info = await js.stream_info(spec.name)
            except Exception as exc:  # noqa: BLE001 - report, don't crash the status view
                report["streams"].append({"name": spec.name, "error": str(exc) or type(exc).__name__})
                continue
            report["streams"].append(
                {
                    "name": spec.name,
                    "messages": info.state.messages,
                    "bytes": info.state.bytes,
                    **stream_placement(info.cluster),  # leader, followers' lag
                }
            )
        for consumer in topology.consumer_specs():
            try:
                cinfo = await js.consumer_info(consumer.stream, consumer.durable)
            except Exception as exc:  # noqa: BLE001
                report["consumers"].append(
                    {"name": consumer.durable, "error": str(exc) or type(exc).__name__}
                )
                continue
            pending, ack_pending = cinfo.num_pending or 0, cinfo.num_ack_pending or 0
            report["consumers"].append(
                {
                    "name": consumer.durable,
                    "stream": consumer.stream,
                    "pending": pending,
                    "ack_pending": ack_pending,
                    # KEDA's nats-jetstream lag for this consumer.
                    "lag": pending + ack_pending,
                    "redelivered": cinfo.num_redelivered or 0,
                }
            )
        report["cameras"] = await camera_states(js, runtime)
    finally:
        await nc.close()
    for proc in runtime.processes if runtime else ():
        report["processes"].append({**proc.to_json(), "alive": proc.alive})
    report["inference"] = await asyncio.to_thread(inference_backends, runtime)
    report["stages"] = await asyncio.to_thread(stage_rows, report["consumers"], runtime)
    return report


async def camera_states(js: JetStreamContext, runtime: Runtime | None) -> list[dict[str, Any]]:
    """Every camera: those added (cameras bucket) and the one `run --source` started, with the
    state its gateway last stored (running, reconnecting, failed, ended, stopped)."""
    added: dict[str, CameraSpec] = {}
    with contextlib.suppress(Exception):  # no bucket or no keys yet: no added camera
        cameras_kv = await js.key_value(Names.CAMERAS_BUCKET)
        for key in await bus.bucket_keys(js, Names.CAMERAS_BUCKET):
            with contextlib.suppress(Exception):
                entry = await cameras_kv.get(key)
                if entry.value:
                    added[key] = CameraSpec.from_json(key, entry.value)
    states: dict[str, SourceState] = {}
    with contextlib.suppress(Exception):
        for key in await bus.bucket_keys(js, Names.SOURCES_BUCKET):
            state = await read_source_state(js, key)
            if state is not None:
                states[key] = state
    gateways = {
        p.name.removeprefix("gateway-") for p in (runtime.processes if runtime else ()) if p.kind == "gateway"
    }
    rows = []
    now = time.time()
    for name in sorted(set(added) | (set(states) & gateways)):
        state = states.get(name)
        spec = added.get(name)
        rows.append(
            {
                "camera": name,
                "source": redact(spec.source) if spec else (state.source if state else ""),
                "added_by": "cameras add" if spec else "run --source",
                "state": state.state if state else "starting",
                "gops": state.next_gop if state else 0,
                "lost_frames": state.lost_frames if state else 0,
                "dropped_gops": state.dropped_gops if state else 0,
                "updated_s_ago": round(now - state.updated_at, 1) if state and state.updated_at else None,
            }
        )
    return rows


async def list_camera_states(settings: Settings, runtime: Runtime | None) -> list[dict[str, Any]]:
    """``framepipe cameras list``: :func:`camera_states` of the system at ``settings.nats``."""
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        return await camera_states(nc.jetstream(timeout=10.0), runtime)
    finally:
        await nc.close()


CAMERA_COLUMNS = ("camera", "source", "state", "gops", "added_by")


def camera_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Tab-separated lines with a header (scripts split on tabs; people read the header)."""
    header = "\t".join(column.upper().replace("_", " ") for column in CAMERA_COLUMNS)
    return [header, *("\t".join(str(row[column]) for column in CAMERA_COLUMNS) for row in rows)]


def stage_rows(consumers: list[dict[str, Any]], runtime: Runtime | None) -> list[dict[str, Any]]:
    """Per stage: replicas, lag, GOPs done, GOPs/s since its processes started, and p95.

    One snapshot has no interval to difference, so the rate is each process's
    ``framepipe_gops_total`` over its uptime (``--watch`` shows the last interval's)."""
    metrics = stage_metrics(runtime)
    lag = {c["name"]: c.get("lag") for c in consumers}
    rows = []
    for stage in (spec.name for spec in topology.consumer_stages()):
        m = metrics.get(stage, {"replicas": 0, "gops": 0.0, "buckets": {}, "rate": 0.0})
        p95 = histogram_quantile(m["buckets"], 0.95)
        rows.append(
            {
                "stage": stage,
                "replicas": m["replicas"],
                "lag": lag.get(stage),
                "gops": int(m["gops"]),
                "gops_per_s": round(m.get("rate", 0.0), 3),
                "p95_ms": round(p95 * 1000) if p95 is not None else None,
            }
        )
    return rows


def render_status(report: dict[str, Any]) -> list[Table]:
    streams = Table(title=f"Streams on {report['nats_url']}")
    for column in ("stream", "messages", "bytes", "leader", "replicas (lag in messages)"):
        streams.add_column(column)
    for s in report["streams"]:
        streams.add_row(
            s["name"],
            str(s.get("messages", s.get("error"))),
            str(s.get("bytes", "")),
            s.get("leader", ""),
            s.get("replicas", ""),
        )
    consumers = Table(title="Consumers (lag = pending + ack pending, as KEDA computes it)")
    for column in ("consumer", "stream", "pending", "ack pending", "lag", "redelivered"):
        consumers.add_column(column)
    for c in report["consumers"]:
        if "error" in c:
            consumers.add_row(c["name"], "", c["error"], "", "", "")
        else:
            consumers.add_row(
                c["name"],
                c["stream"],
                str(c["pending"]),
                str(c["ack_pending"]),
                str(c["lag"]),
                str(c["redelivered"]),
            )
    tables = [*_camera_and_stage_tables(report), streams, consumers]
    if report["processes"]:
        procs = Table(title="Local processes")
        for column in ("process", "pid", "alive", "log"):
            procs.add_column(column)
        for p in report["processes"]:
            procs.add_row(p["name"], str(p["pid"]), "yes" if p["alive"] else "no", p["log"])
        tables.append(procs)
    if report.get("inference"):
        backends = Table(title="Inference backends")
        for column in ("process", *BACKEND_FIELDS):
            backends.add_column(column)
        for row in report["inference"]:
            backends.add_row(row["process"], *(row[k] for k in BACKEND_FIELDS))
        tables.append(backends)
    return tables


def _camera_and_stage_tables(report: dict[str, Any]) -> list[Table]:
    cameras = Table(title="Cameras")
    for column in ("camera", "source", "state", "GOPs published", "lost frames", "GOPs dropped", "added by"):
        cameras.add_column(column)
    for cam in report.get("cameras", []):
        cameras.add_row(
            cam["camera"],
            cam["source"],
            cam["state"],
            str(cam["gops"]),
            str(cam["lost_frames"]),
            str(cam.get("dropped_gops", 0)),
            cam["added_by"],
        )
    stages = Table(title="Stages (GOPs/s since each process started; `--watch` shows the last interval)")
    for column in ("stage", "replicas", "lag", "GOPs done", "GOPs/s", "p95 latency"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for row in report.get("stages", []):
        stages.add_row(
            row["stage"],
            str(row["replicas"]),
            "" if row["lag"] is None else str(row["lag"]),
            str(row["gops"]),
            f"{row['gops_per_s']:.2f}",
            "" if row["p95_ms"] is None else f"{row['p95_ms']} ms",
        )
    return [cameras, stages]


# -- the live view (``framepipe status --watch``) --------------------------------------


class Watch:
    """Polls status and metrics; computes rates and p95 over the last interval."""

    def __init__(self, settings: Settings, runtime_file: Path) -> None:
        self.settings = settings
        self.runtime_file = runtime_file
        self._previous: tuple[float, dict[str, dict[str, Any]]] | None = None

    def poll(self) -> Group:
        runtime = read_runtime(self.runtime_file)
        settings = self.settings
        if runtime:
            settings = settings.replace(nats={"url": runtime.nats_url})
        try:
            report = asyncio.run(collect_status(settings, runtime))
            cameras = report["cameras"]
        except Exception as exc:  # noqa: BLE001 - keep watching through restarts
            return Group(f"[red]cannot reach NATS at {settings.nats.url}: {exc}[/]")
        now, metrics = time.monotonic(), stage_metrics(runtime)
        previous = self._previous
        self._previous = (now, metrics)
        lag = {c["name"]: c.get("lag", "") for c in report["consumers"]}
        table = Table(title="Stages (lag as KEDA computes it; rate and p95 over the last interval)")
        for column in ("stage", "replicas", "lag", "GOPs/s", "p95 latency"):
            table.add_column(column, justify="right" if column != "stage" else "left")
        for stage in (spec.name for spec in topology.consumer_stages()):
            m = metrics.get(stage, {"replicas": 0, "gops": 0.0, "buckets": {}})
            rate, buckets = "", dict(m["buckets"])
            if previous and stage in previous[1]:
                dt = max(now - previous[0], 1e-6)
                rate = f"{max(m['gops'] - previous[1][stage]['gops'], 0) / dt:.2f}"
                before = previous[1][stage]["buckets"]
                delta = {le: v - before.get(le, 0.0) for le, v in buckets.items()}
                if delta and max(delta.values()) > 0:
                    buckets = delta
            p95 = histogram_quantile(buckets, 0.95)
            table.add_row(
                stage,
                str(m["replicas"]),
                str(lag.get(stage, "")),
                rate,
                f"{p95 * 1000:.0f} ms" if p95 is not None else "",
            )
        cams = Table(title="Cameras")
        for column in ("camera", "source state", "GOPs published"):
            cams.add_column(column)
        for cam in cameras:
            cams.add_row(cam["camera"], cam["state"], str(cam["gops"]))
        streams, consumers = render_status({**report, "processes": []})[2:4]
        return Group(cams, table, consumers, streams)


def watch_status(settings: Settings, runtime_file: Path, console: Console, interval: float = 2.0) -> None:
    """``framepipe status --watch``: a live view until Ctrl-C."""
    watch = Watch(settings, runtime_file)
    with Live(watch.poll(), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(watch.poll())
        except KeyboardInterrupt:
            pass
