"""Gateway: demux a camera/file with PyAV (no decode), publish one message per GOP.

Demuxing runs in a thread (PyAV blocks on I/O) and hands GOPs to the event
loop through a bounded queue, so a slow bus applies back-pressure to the
reader instead of growing memory. Each GOP is published to ``video.<camera>``
with ``Nats-Msg-Id = <camera>:<gop>:gateway``; the camera's progress (next GOP,
frames, running/ended) lives in the sources KV bucket, so a restarted gateway
continues the numbering and the sink knows when a file source is complete.

Live sources (RTSP and other URLs) never end on their own: a failed open, a
read timeout or an end of stream closes the input, and the reader reconnects
with exponential backoff and jitter (waiting on the stop event, so no busy
loop). The first GOP after a reconnect is marked ``discontinuity`` (the sink
writes ``#EXT-X-DISCONTINUITY``), a :class:`~framepipe.core.messages.GapMessage`
goes to ``dets.<camera>`` for applications, and one log line records the gap.
Timestamps are made monotonic across reconnects, jumps and wraps
(:class:`~framepipe.media.gop.TimestampNormalizer`). Credentials come from the
URL or ``FRAMEPIPE_SOURCE_USERNAME``/``FRAMEPIPE_SOURCE_PASSWORD`` and are
removed from everything stored or logged.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from framepipe.core import bus, messages
from framepipe.core.errors import SourceError
from framepipe.core.messages import Headers
from framepipe.core.settings import GatewaySettings, Settings
from framepipe.core.sources import SourceState, is_live, read_source_state, redact, with_credentials
from framepipe.core.topology import Names, validate_camera_name
from framepipe.media.gop import DemuxedPacket, Gop, GopCutter, TimestampNormalizer

log = structlog.get_logger("framepipe.gateway")
_END = object()


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


def open_input(
    source: str,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] = 10.0,
) -> tuple[Any, Any]:
    """Open a file/URL and return (container, video stream) or raise SourceError."""
    try:
        container = av.open(source, options=options or {"rw_timeout": "10000000"}, timeout=timeout)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {redact(source)}: {_error_text(exc, source)}") from None
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


class Gateway:
    def __init__(self, settings: Settings, camera: str, source: str, pacing: str | None = None) -> None:
        self.settings = settings
        self.camera = validate_camera_name(camera)
        self.source = source
        self.pacing = pacing or settings.gateway.pacing
        self.stopping = threading.Event()
        self.published = 0
        self.gaps = 0

    def stop(self) -> None:
        self.stopping.set()

    def _reader(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], start: SourceState) -> None:
        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        cfg = self.settings.gateway
        live = is_live(self.source)
        url = with_credentials(self.source)
        options = input_options(url, cfg)
        next_gop, next_frame = start.next_gop, start.next_frame
        normalizer: TimestampNormalizer | None = None
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
                    cutter = GopCutter(
                        params.codec,
                        params.extradata,
                        params.time_base,
                        cfg.gop_max_seconds,
                        first_index=next_gop,
                        first_frame=next_frame,
                    )
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
                                cutter.mark_discontinuity()
                                log.warning(
                                    "gateway.timestamp_jump", camera=self.camera, at_gop=cutter.next_index
                                )
                            for gop in cutter.push(DemuxedPacket(pts, dts, keyframe, data)):
                                put(gop)
                    except (av.error.FFmpegError, OSError) as exc:
                        reason = _error_text(exc, url, cfg.read_timeout_s)
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
                            why="stream started before its first IDR frame (or its SPS/PPS)",
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
            put(_END)

    async def run(self) -> SourceState:
        """Publish every GOP of the source; return the final source state."""
        nc = await bus.connect(self.settings, f"framepipe-gateway-{self.camera}")
        js = nc.jetstream(timeout=10.0)
        kv = await js.key_value(Names.SOURCES_BUCKET)
        previous = await read_source_state(js, self.camera)
        state = SourceState(self.camera, redact(self.source))
        if previous is not None:
            state.next_gop, state.next_frame = previous.next_gop, previous.next_frame
        state.first_gop = state.next_gop
        await self._save(kv, state)

        live = is_live(self.source)
        pacing = "live" if live else self.pacing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
        reader = threading.Thread(target=self._reader, args=(loop, queue, state), daemon=True)
        reader.start()
        params: StreamParams | None = None
        clock_start: float | None = None
        pts_start: int | None = None
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, SourceError):
                    raise item
                if isinstance(item, SourceProblem):
                    # One line per failed attempt; the error never contains credentials.
                    log.warning(
                        "gateway.source_error",
                        camera=self.camera,
                        source=redact(self.source),
                        error=item.error,
                        attempt=item.attempt,
                        retry_in_s=round(item.retry_in_s, 2),
                    )
                    if state.state != "reconnecting":
                        state.state = "reconnecting"
                        await self._save(kv, state)
                    continue
                if isinstance(item, Reconnected):
                    await self._publish_gap(js, item)
                    continue
                if isinstance(item, StreamParams):
                    params = item
                    clock_start = pts_start = None
                    if state.state != "running":
                        state.state = "running"
                        await self._save(kv, state)
                    log.info(
                        "gateway.opened",
                        camera=self.camera,
                        source=redact(self.source),
                        codec=params.codec,
                        width=params.width,
                        height=params.height,
                        pacing=pacing,
                    )
                    continue
                if params is None or not isinstance(item, Gop):
                    raise SourceError(f"reader sent {type(item).__name__} before stream parameters")
                if pacing == "realtime":
                    # File sources played as if live: wall clock against pts, re-anchored after a jump.
                    first_pts, last_pts = min(p.pts for p in item.packets), max(p.pts for p in item.packets)
                    if clock_start is None or pts_start is None:
                        clock_start, pts_start = time.monotonic(), first_pts
                    due = clock_start + float((last_pts - pts_start) * params.time_base)
                    wait = due - time.monotonic()
                    if wait > self.settings.gateway.gop_max_seconds * 2 or item.discontinuity:
                        clock_start, pts_start = time.monotonic(), first_pts
                        wait = float((last_pts - first_pts) * params.time_base)
                    await asyncio.sleep(max(0.0, wait))
                started = time.perf_counter()
                message = gop_message(self.camera, item, params)
                headers, body = messages.encode(message)
                headers[Headers.STAGE] = "gateway"
                await bus.publish(
                    js,
                    Names.subject(Names.VIDEO, self.camera),
                    body,
                    headers,
                    Names.msg_id(self.camera, item.index, "gateway"),
                )
                self.published += 1
                state.next_gop = item.index + 1
                state.next_frame = item.frame_offset + len(item.packets)
                await self._save(kv, state)
                log.info(
                    "gop.done",
                    stage="gateway",
                    camera=self.camera,
                    gop=item.index,
                    frames=len(item.packets),
                    bytes=len(body),
                    open=item.open,
                    discontinuity=item.discontinuity,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
            state.state = "stopped" if self.stopping.is_set() else "ended"
        except BaseException:
            state.state = "failed"
            raise
        finally:
            self.stopping.set()
            try:
                await self._save(kv, state)
            except Exception as exc:  # noqa: BLE001 - never mask the error that ended the run
                log.warning("gateway.state_not_saved", camera=self.camera, state=state.state, error=str(exc))
            finally:
                await nc.drain()
        return state

    async def _save(self, kv: KeyValue, state: SourceState) -> None:
        """Stamp and store the source state (retried through a NATS restart)."""
        state.updated_at = time.time()
        await bus.kv_put(kv, self.camera, state.to_json())

    async def _publish_gap(self, js: JetStreamContext, gap: Reconnected) -> None:
        """Record a reconnect: one log line and a gap event on ``dets.<camera>``."""
        self.gaps += 1
        log.warning(
            "gateway.gap",
            camera=self.camera,
            gop=gap.gop,
            down_s=round(gap.down_s, 2),
            reason=gap.reason,
        )
        message = messages.GapMessage(
            camera=self.camera, gop=gap.gop, since=gap.since, down_s=gap.down_s, reason=gap.reason
        )
        headers, body = messages.encode(message)
        headers[Headers.STAGE] = "gateway"
        try:
            await bus.publish(
                js,
                Names.subject(Names.DETECTIONS, self.camera),
                body,
                headers,
                Names.msg_id(self.camera, gap.gop, "gateway-gap"),
                attempts=2,
            )
        except Exception as exc:  # noqa: BLE001 - the video matters more than the event
            log.warning(
                "gateway.gap_event_failed",
                camera=self.camera,
                gop=gap.gop,
                error=str(exc) or type(exc).__name__,
            )


def gop_message(camera: str, gop: Gop, params: StreamParams) -> messages.GopMessage:
    return messages.GopMessage(
        camera=camera,
        gop=gop.index,
        codec=params.codec,
        width=params.width,
        height=params.height,
        time_base=(params.time_base.numerator, params.time_base.denominator),
        frame_offset=gop.frame_offset,
        pts=tuple(p.pts for p in gop.packets),
        dts=tuple(p.dts for p in gop.packets),
        keyframes=tuple(p.keyframe for p in gop.packets),
        packets=tuple(p.data for p in gop.packets),
        extradata=params.extradata,
        captured_at=time.time(),
        discontinuity=gop.discontinuity,
    )


def _error_text(exc: BaseException, source: str, timeout_s: float | None = None) -> str:
    """FFmpeg's reason without the URL it appends (that one may hold credentials)."""
    reason = str(getattr(exc, "strerror", None) or exc)
    if "Immediate exit requested" in reason:  # AVERROR_EXIT: PyAV's timeout interrupted the I/O
        reason = f"timed out (no data for {timeout_s:g}s)" if timeout_s else "timed out"
    return _scrub(reason, source)


def _scrub(text: str, source: str) -> str:
    """An FFmpeg error message on one line, without the URL's credentials."""
    text = text.replace(source, redact(source))
    return " ".join(redact(text).split())
