"""The demux thread: open a camera or file with PyAV (no decode) and cut it into GOPs.

PyAV blocks on I/O, so :class:`SourceReader` runs in a thread and hands what it
reads (stream parameters, GOPs and source events) to the event loop through the
gateway's bounded queue: a slow bus applies back-pressure here instead of
growing memory.

Live sources (RTSP and other URLs) never end on their own: a failed open, a
read timeout or an end of stream closes the input, and the reader reconnects
with exponential backoff and jitter (waiting on the stop event, so no busy
loop). The first GOP after a reconnect is marked ``discontinuity`` and a
:class:`Reconnected` event follows it to the gateway. Timestamps are made
monotonic across reconnects, jumps and wraps
(:class:`~framepipe.media.gop.TimestampNormalizer`).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import structlog

from framepipe.core.errors import SourceError
from framepipe.core.settings import GatewaySettings
from framepipe.core.sources import SourceState, is_live, redact, with_credentials
from framepipe.media.gop import DemuxedPacket, GopCutter, TimestampNormalizer
from framepipe.media.loss import FrameLossDetector
from framepipe.stages.gateway.credentials import ffmpeg_error_text

log = structlog.get_logger("framepipe.gateway")
#: the reader's last item on the queue: the source is done (ended, failed or stopped).
END_OF_SOURCE = object()


@dataclass(frozen=True)
class SourceProblem:
    """The input failed (open, read or end of a live stream); a retry follows."""

    error: str
    attempt: int
    retry_in_s: float
    connected: bool


@dataclass(frozen=True)
class Reconnected:
    """A live input is back after ``down_s`` seconds; ``gop`` is the first GOP after the gap."""

    gop: int
    down_s: float
    since: float
    reason: str


def backoff_delay(attempt: int, settings: GatewaySettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter in the upper half: [d/2, d], d = initial·2^attempt ≤ max."""
    base = min(settings.reconnect_max_s, settings.reconnect_initial_s * (2 ** min(attempt, 30)))
    jitter: float = (rng or random).random()
    return float(base * (0.5 + 0.5 * jitter))


def input_options(source: str, settings: GatewaySettings) -> dict[str, str]:
    """FFmpeg options: RTSP transport and socket timeout; I/O timeout elsewhere."""
    read_us = str(int(settings.read_timeout_s * 1_000_000))
    if source.lower().startswith(("rtsp://", "rtsps://")):
        return {"rtsp_transport": settings.rtsp_transport, "timeout": read_us}
    return {"rw_timeout": read_us}


@dataclass(frozen=True)
class StreamParams:
    codec: str
    width: int
    height: int
    time_base: Fraction
    extradata: bytes | None
    pixel_format: str = ""
    #: audio streams beside the video: framepipe records video only (said once, InputCheck).
    audio_tracks: int = 0


def open_input(
    source: str,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] = 10.0,
) -> tuple[Any, Any]:
    """Open a file/URL and return (container, video stream) or raise SourceError."""
    try:
        container = av.open(source, options=options or {"rw_timeout": "10000000"}, timeout=timeout)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {redact(source)}: {ffmpeg_error_text(exc, source)}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{redact(source)} has no video stream")
    return container, container.streams.video[0]


def stream_params(stream: Any) -> StreamParams:
    ctx = stream.codec_context
    if stream.time_base is None:
        raise SourceError("video stream has no time base")
    return StreamParams(
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        time_base=Fraction(stream.time_base),
        extradata=bytes(ctx.extradata) if ctx.extradata else None,
        pixel_format=ctx.format.name if ctx.format is not None else "",
        audio_tracks=len(stream.container.streams.audio) if stream.container is not None else 0,
    )


def iter_packets(container: Any, stream: Any) -> Iterator[DemuxedPacket]:
    last_dts: int | None = None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        pts = packet.pts if packet.pts is not None else packet.dts
        dts = packet.dts if packet.dts is not None else pts
        if pts is None:
            # Raw streams without timestamps: synthesise from the previous packet.
            pts = dts = (last_dts + 1) if last_dts is not None else 0
        last_dts = dts
        yield DemuxedPacket(int(pts), int(dts), bool(packet.is_keyframe), bytes(packet))


def iter_raw_packets(container: Any, stream: Any) -> Iterator[tuple[int | None, int | None, bool, bytes]]:
    """(pts, dts, keyframe, data) as demuxed; timestamps may be missing (live streams)."""
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        yield packet.pts, packet.dts, bool(packet.is_keyframe), bytes(packet)


class SourceReader:
    """One camera's demux thread: GOPs and source events onto the gateway's queue."""

    def __init__(
        self,
        camera: str,
        source: str,
        settings: GatewaySettings,
        stopping: threading.Event,
        *,
        once: bool = False,
        on_packet: Callable[[DemuxedPacket, StreamParams], None] | None = None,
    ) -> None:
        self.camera = camera
        #: called in this thread with every packet as read (normalized timestamps): the
        #: instant live view's forwarder; must not block.
        self.on_packet = on_packet
        #: read a live source once (``run --once``): a failed open or read ends the reader
        #: with the error, the end of the stream ends it; no reconnect.
        self.once = once
        #: frames missing from the input (holes in its timestamps), for the source state.
        self.lost_frames = 0
        #: as configured (credentials possibly inside): redacted wherever it is shown.
        self.source = source
        self.settings = settings
        self.stopping = stopping

    def run(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], start: SourceState) -> None:
        """Read until the source ends (files), fails for good or ``stopping`` is set."""

        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        cfg = self.settings
        live = is_live(self.source) and not self.once  # reconnects until stopped
        url = with_credentials(self.source)
        options = input_options(url, cfg)
        next_gop, next_frame = start.next_gop, start.next_frame
        normalizer: TimestampNormalizer | None = None
        #: holes in the input's timestamps (frames a damaged input lost), counted in ``lost_frames``.
        holes = FrameLossDetector()
        attempt = 0
        down_since: float | None = None
        down_reason = ""
        try:
            while not self.stopping.is_set():
                try:
                    container, stream = open_input(url, options, (cfg.connect_timeout_s, cfg.read_timeout_s))
                    params = stream_params(stream)
                except SourceError as exc:
                    if not live:
                        put(exc)
                        return
                    down_since = down_since or time.time()
                    down_reason = down_reason or str(exc)
                    delay = backoff_delay(attempt, cfg)
                    attempt += 1
                    put(SourceProblem(str(exc), attempt, delay, connected=False))
                    self.stopping.wait(delay)
                    continue
                error: str | None = None
                received = False
                with container:
                    put(params)
                    if normalizer is None:
                        normalizer = TimestampNormalizer(params.time_base)
                    else:
                        normalizer.restart(params.time_base)
                    holes.restart()
                    cutter = GopCutter(
                        params.codec,
                        params.extradata,
                        params.time_base,
                        cfg.gop_max_seconds,
                        first_index=next_gop,
                        first_frame=next_frame,
                    )
                    if next_gop > 0 and next_gop == start.next_gop:
                        # The camera's numbering goes on from an earlier gateway (removed and
                        # added again, maybe with another source, or restarted): a new recording.
                        cutter.mark_discontinuity()
                    if down_since is not None:
                        cutter.mark_discontinuity()
                        put(Reconnected(next_gop, time.time() - down_since, down_since, down_reason))
                        down_since, down_reason = None, ""
                    try:
                        for raw_pts, raw_dts, keyframe, data in iter_raw_packets(container, stream):
                            if self.stopping.is_set():
                                break
                            if not received:
                                received, attempt = True, 0
                            pts, dts, jumped = normalizer(raw_pts, raw_dts)
                            if jumped:
                                holes.restart()
                                cutter.mark_discontinuity()
                                log.warning(
                                    "gateway.timestamp_jump", camera=self.camera, at_gop=cutter.next_index
                                )
                            if missing := holes.push(dts):
                                # The frames after a hole reference frames that are gone: end
                                # the GOP here; the next IDR starts a GOP marked discontinuous.
                                for gop in cutter.flush():
                                    put(gop)
                                cutter.frames_seen += missing
                                cutter.mark_discontinuity()
                                self.lost_frames += missing
                                log.warning(
                                    "gateway.frames_lost",
                                    camera=self.camera,
                                    gop=cutter.next_index,
                                    frames=missing,
                                    lost_total=self.lost_frames,
                                    why="damaged input: the demuxer skipped what it could not read",
                                )
                            packet = DemuxedPacket(pts, dts, keyframe, data)
                            if self.on_packet is not None:
                                self.on_packet(packet, params)
                            for gop in cutter.push(packet):
                                put(gop)
                    except (av.error.FFmpegError, OSError) as exc:
                        reason = ffmpeg_error_text(exc, url, cfg.read_timeout_s)
                        error = f"reading {redact(self.source)} failed: {reason}"
                    if not self.stopping.is_set():
                        # A GOP cut short by a disconnect still starts at an IDR: decodable.
                        for gop in cutter.flush():
                            put(gop)
                    next_gop, next_frame = cutter.next_index, cutter.frames_seen
                    if cutter.skipped_before_first:
                        log.warning(
                            "gateway.skipped_leading_packets",
                            camera=self.camera,
                            packets=cutter.skipped_before_first,
                            why="stream started before its first IDR frame (or its SPS/PPS), or frames "
                            "after a hole in a damaged input referenced lost ones",
                        )
                if self.stopping.is_set():
                    return
                if not live:
                    if error:
                        put(SourceError(error))
                    return
                down_since = time.time()
                down_reason = error or "end of stream"
                delay = backoff_delay(attempt, cfg)
                attempt += 1
                put(SourceProblem(down_reason, attempt, delay, connected=received))
                self.stopping.wait(delay)
        except SourceError as exc:
            put(exc)
        finally:
            put(END_OF_SOURCE)
