"""Gateway: demux a camera/file with PyAV (no decode), publish one message per GOP.

Demuxing runs in a thread (PyAV blocks on I/O) and hands GOPs to the event
loop through a bounded queue, so a slow bus applies back-pressure to the
reader instead of growing memory. Each GOP is published to ``video.<camera>``
with ``Nats-Msg-Id = <camera>:<gop>:gateway``; the camera's progress (next GOP,
frames, running/ended) lives in the sources KV bucket, so a restarted gateway
continues the numbering and the sink knows when a file source is complete.
"""

from __future__ import annotations

import asyncio
import json
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
from nats.js.errors import KeyNotFoundError

from framepipe.media.gop import DemuxedPacket, Gop, GopCutter
from framepipe.pipeline import bus, messages
from framepipe.pipeline.config import Headers, Names, Settings, validate_camera_name
from framepipe.pipeline.errors import SourceError

log = structlog.get_logger("framepipe.gateway")
_END = object()


@dataclass(frozen=True)
class StreamParams:
    codec: str
    width: int
    height: int
    time_base: Fraction
    extradata: bytes | None


@dataclass
class SourceState:
    """Per-camera progress kept in the sources KV bucket."""

    camera: str
    source: str
    state: str = "running"
    next_gop: int = 0
    next_frame: int = 0
    first_gop: int = 0
    updated_at: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SourceState:
        data: dict[str, Any] = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


async def read_source_state(js: JetStreamContext, camera: str) -> SourceState | None:
    kv = await js.key_value(Names.SOURCES_BUCKET)
    try:
        entry = await kv.get(camera)
    except KeyNotFoundError:
        return None
    return SourceState.from_json(entry.value) if entry.value else None


def open_input(source: str) -> tuple[Any, Any]:
    """Open a file/URL and return (container, video stream) or raise SourceError."""
    try:
        container = av.open(source, options={"rw_timeout": "10000000"}, timeout=10.0)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {source}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{source} has no video stream")
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


class Gateway:
    def __init__(self, settings: Settings, camera: str, source: str, pacing: str | None = None) -> None:
        self.settings = settings
        self.camera = validate_camera_name(camera)
        self.source = source
        self.pacing = pacing or settings.gateway.pacing
        self.stopping = threading.Event()
        self.published = 0

    def stop(self) -> None:
        self.stopping.set()

    def _reader(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], start: SourceState) -> None:
        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        try:
            container, stream = open_input(self.source)
            with container:
                params = stream_params(stream)
                put(params)
                cutter = GopCutter(
                    params.codec,
                    params.extradata,
                    params.time_base,
                    self.settings.gateway.gop_max_seconds,
                    first_index=start.next_gop,
                    first_frame=start.next_frame,
                )
                for packet in iter_packets(container, stream):
                    if self.stopping.is_set():
                        break
                    for gop in cutter.push(packet):
                        put(gop)
                if not self.stopping.is_set():
                    for gop in cutter.flush():
                        put(gop)
                if cutter.skipped_before_first:
                    log.warning(
                        "gateway.skipped_leading_packets",
                        camera=self.camera,
                        packets=cutter.skipped_before_first,
                        why="stream started before its first IDR frame",
                    )
        except SourceError as exc:
            put(exc)
        except av.error.FFmpegError as exc:
            put(SourceError(f"reading {self.source} failed: {exc}"))
        finally:
            put(_END)

    async def run(self) -> SourceState:
        """Publish every GOP of the source; return the final source state."""
        nc = await bus.connect(self.settings, f"framepipe-gateway-{self.camera}")
        js = nc.jetstream(timeout=10.0)
        kv = await js.key_value(Names.SOURCES_BUCKET)
        previous = await read_source_state(js, self.camera)
        state = SourceState(self.camera, _redact(self.source))
        if previous is not None:
            state.next_gop, state.next_frame = previous.next_gop, previous.next_frame
        state.first_gop = state.next_gop
        state.updated_at = time.time()
        await kv.put(self.camera, state.to_json())

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
                if isinstance(item, StreamParams):
                    params = item
                    log.info(
                        "gateway.opened",
                        camera=self.camera,
                        codec=params.codec,
                        width=params.width,
                        height=params.height,
                        pacing=self.pacing,
                    )
                    continue
                if params is None or not isinstance(item, Gop):
                    raise SourceError(f"reader sent {type(item).__name__} before stream parameters")
                if self.pacing == "realtime":
                    last_pts = max(p.pts for p in item.packets)
                    if clock_start is None or pts_start is None:
                        clock_start, pts_start = time.monotonic(), min(p.pts for p in item.packets)
                    due = clock_start + float((last_pts - pts_start) * params.time_base)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
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
                state.updated_at = time.time()
                await kv.put(self.camera, state.to_json())
                log.info(
                    "gop.done",
                    stage="gateway",
                    camera=self.camera,
                    gop=item.index,
                    frames=len(item.packets),
                    bytes=len(body),
                    open=item.open,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
            state.state = "stopped" if self.stopping.is_set() else "ended"
        except BaseException:
            state.state = "failed"
            raise
        finally:
            self.stopping.set()
            state.updated_at = time.time()
            try:
                await kv.put(self.camera, state.to_json())
            finally:
                await nc.drain()
        return state


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


def _redact(source: str) -> str:
    """Drop credentials from a URL before it is stored or logged."""
    if "://" in source and "@" in source.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = source.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return source
