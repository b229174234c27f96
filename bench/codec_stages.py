"""Codec bench, the stage side: real decoder and encoder stage processes fed through
:class:`~bench.common.StageHarness`, the inputs they are fed (GOPs, ENCODE items with
the true face boxes) and the figures of their runs. Used by :mod:`bench.codec` and
:mod:`bench.scaling`."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from bench.common import Outgoing, StageHarness, StageRun, handler_seconds
from framepipe.core import messages
from framepipe.core.messages import Detection, EncodeItem, FrameDetections, GopMessage, Headers
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.media.sample import ClipSpec, face_box
from framepipe.stages.decoder import frames_per_part, split


def detections(spec: ClipSpec, gop: GopMessage) -> tuple[FrameDetections, ...]:
    """The true face box of every frame, as the inference stage would report it."""
    return tuple(
        FrameDetections(gop.frame_offset + i, pts, (Detection(face_box(spec, gop.frame_offset + i), 0.9),))
        for i, pts in enumerate(sorted(gop.pts))
    )


def outgoing(message: messages.Message, stream: str, msg_id: str) -> Outgoing:
    headers, body = messages.encode(message)
    headers[Headers.STAGE] = "bench"
    return Outgoing(Names.subject(stream, message.camera), headers, body, msg_id)


def gop_inputs(gops: list[GopMessage]) -> list[Outgoing]:
    return [outgoing(g, Names.VIDEO, Names.msg_id(g.camera, g.gop, "gateway")) for g in gops]


def decoder_parts(gops: list[GopMessage], settings: Settings) -> int:
    size, cfg = settings.inference.input_size, settings.decoder
    per_part = frames_per_part(size, settings.nats.max_payload, cfg.frames_per_part)
    return sum(len(split(len(g.packets), per_part)) for g in gops)


def stage_figures(runs: list[StageRun], frames: int, bare_fps: float) -> dict[str, Any]:
    """The fastest run's wall time, and where it went: some message in the handler (busy)
    vs none (fetch round trips, waiting); how much handler time overlapped (``in_flight``)."""
    run = min(runs, key=lambda r: r.seconds)
    handled, busy = handler_seconds(run.logs, camera="codec")
    return {
        "complete": all(r.complete for r in runs),
        "seconds": run.seconds,
        "runs_s": [round(r.seconds, 3) for r in runs],
        "fps": frames / run.seconds,
        "cpu_s": round(run.cpu_s, 3),
        "nats_server_cpu_s": round(run.server_cpu_s, 3),
        "fps_per_cpu_s": frames / min(r.cpu_s for r in runs) if run.cpu_s > 0 else 0.0,
        "handler_sum_s": round(handled, 3),
        "busy_s": round(busy, 3),
        "bus_and_idle_s": round(run.seconds - busy, 3),
        "overlapped_s": round(handled - busy, 3),
        "bare_s": round(frames / bare_fps, 3),
    }


WARMUP_GOPS = 2


def warmup_gops(gops: list[GopMessage]) -> list[GopMessage]:
    """The first GOPs again under another camera name (own message ids and subjects)."""
    return [dataclasses.replace(g, camera="warmup") for g in gops[:WARMUP_GOPS]]


def decoder_stage_run(gops: list[GopMessage], settings: Settings, workdir: Path) -> StageRun:
    warm = warmup_gops(gops)
    with StageHarness(workdir, settings) as harness:
        return harness.run(
            "decoder",
            1,
            gop_inputs(gops),
            Names.FRAMES,
            decoder_parts(gops, settings),
            warmup=gop_inputs(warm),
            warmup_expect=decoder_parts(warm, settings),
        )


def encode_items(spec: ClipSpec, gops: list[GopMessage], seqs: list[int]) -> list[Outgoing]:
    return [
        outgoing(
            EncodeItem(camera=g.camera, gop=g.gop, video_seq=seq, frames=detections(spec, g)),
            Names.ENCODE,
            Names.msg_id(g.camera, g.gop, "inference"),
        )
        for g, seq in zip(gops, seqs, strict=True)
    ]


def encoder_stage_run(spec: ClipSpec, gops: list[GopMessage], settings: Settings, workdir: Path) -> StageRun:
    warm = warmup_gops(gops)
    with StageHarness(workdir, settings) as harness:
        seqs = harness.publish(gop_inputs(gops + warm))
        return harness.run(
            "encoder",
            1,
            encode_items(spec, gops, seqs[: len(gops)]),
            Names.OUTPUT,
            len(gops),
            warmup=encode_items(spec, warm, seqs[len(gops) :]),
            warmup_expect=len(warm),
        )


def paired_ratios(passes: list[dict[str, Any]], key: str, runs: list[StageRun]) -> list[float]:
    """Stage run i against the mean of the bare passes right before and after it."""
    frames = passes[0]["frames"]
    out = []
    for index, run in enumerate(runs):
        around = [frames / passes[index][key][0], frames / passes[index + 1][key][0]]
        out.append(round((frames / run.seconds) / statistics.fmean(around), 3))
    return out
