"""``framepipe status``: streams, consumer backlog and local processes."""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table

from framepipe.pipeline import bus
from framepipe.pipeline.config import Settings


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def collect_status(settings: Settings, runtime: dict[str, Any] | None) -> dict[str, Any]:
    nc = await bus.connect(settings, "framepipe-status", retry_initial=False)
    js = nc.jetstream(timeout=5.0)
    report: dict[str, Any] = {"nats_url": settings.nats.url, "streams": [], "consumers": [], "processes": []}
    try:
        for spec in bus.stream_specs(settings):
            try:
                info = await js.stream_info(spec.name)
            except Exception as exc:  # noqa: BLE001 - report, don't crash the status view
                report["streams"].append({"name": spec.name, "error": str(exc) or type(exc).__name__})
                continue
            report["streams"].append(
                {"name": spec.name, "messages": info.state.messages, "bytes": info.state.bytes}
            )
        for consumer in bus.consumer_specs():
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
    finally:
        await nc.close()
    for proc in (runtime or {}).get("processes", []):
        report["processes"].append({**proc, "alive": _pid_alive(proc.get("pid"))})
    return report


def render_status(report: dict[str, Any]) -> list[Table]:
    streams = Table(title=f"Streams on {report['nats_url']}")
    for column in ("stream", "messages", "bytes"):
        streams.add_column(column)
    for s in report["streams"]:
        streams.add_row(s["name"], str(s.get("messages", s.get("error"))), str(s.get("bytes", "")))
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
    tables = [streams, consumers]
    if report["processes"]:
        procs = Table(title="Local processes")
        for column in ("process", "pid", "alive", "log"):
            procs.add_column(column)
        for p in report["processes"]:
            procs.add_row(p["name"], str(p["pid"]), "yes" if p["alive"] else "no", p["log"])
        tables.append(procs)
    return tables
