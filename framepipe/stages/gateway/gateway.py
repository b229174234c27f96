"""The gateway process for one camera: publish each GOP the reader cuts, keep the source state.

Each GOP is published to ``video.<camera>`` with ``Nats-Msg-Id =
<camera>:<gop>:gateway``; the camera's progress (next GOP, frames,
running/ended) lives in the sources KV bucket, so a restarted gateway continues
the numbering and the sink knows when a file source is complete. After a live
source reconnects, a :class:`~framepipe.core.messages.GapMessage` goes to
``dets.<camera>`` for applications and one log line records the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from framepipe.core import bus, health, messages
from framepipe.core.errors import SourceError
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState, is_live, read_source_state, redact
from framepipe.core.topology import Names, validate_camera_name
from framepipe.core.viewers import ViewerWatch
from framepipe.media.gop import Gop
from framepipe.media.input_check import Degraded, InputCheck, InputExpectations
from framepipe.stages.gateway.live import LiveForwarder
from framepipe.stages.gateway.pacing import RealtimePacer
from framepipe.stages.gateway.profile import GopRate
from framepipe.stages.gateway.reader import (
    END_OF_SOURCE,
    Reconnected,
    SourceProblem,
    SourceReader,
    StreamParams,
)
from framepipe.stages.gateway.store_full import FullStoreDrops, StoreFullError, is_store_full

log = structlog.get_logger("framepipe.gateway")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        camera: str,
        source: str,
        pacing: str | None = None,
        *,
        once: bool = False,
        thermal_of: str | None = None,
        live_packets: bool = True,
    ) -> None:
        self.settings = settings
        #: a radiometric thermal camera paired with this visible one: its GOPs go to
        #: ``thermal.<visible camera>`` (read by the fever attribute), never to the video pipeline.
        self.thermal_of = validate_camera_name(thermal_of) if thermal_of else None
        #: forward packets to live.<camera> for the instant view (``gateway.live_packets``; the
        #: bench's with/without comparison turns it off here; a thermal camera's 16-bit video is
        #: not something a browser can play).
        self.live_packets = (
            live_packets and self.thermal_of is None and settings.gateway.live_packets != "off"
        )
        self.live: LiveForwarder | None = None
        #: a live source read once: fail instead of reconnecting (see SourceReader.once).
        self.once = once
        self.camera = validate_camera_name(camera)
        self.source = source
        self.pacing = pacing or settings.gateway.pacing
        self.stopping = threading.Event()
        self.published = 0
        self.gaps = 0
        #: the pod's probes: live while the process runs, ready once NATS is connected.
        self.health = health.Health()

    @property
    def subject(self) -> str:
        if self.thermal_of:  # one thermal camera per visible one: its subject names the pair
            return Names.subject(Names.THERMAL, self.thermal_of)
        return Names.subject(Names.VIDEO, self.camera)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> SourceState:
        """Publish every GOP of the source; return the final source state."""
        if self.settings.gateway.metrics_port >= 0:
            port = self.health.serve(self.settings.gateway.metrics_port, self.settings.gateway.metrics_host)
            log.info("gateway.health", camera=self.camera, port=port)
        try:
            return await self._publish_source()
        finally:
            self.health.close()

    async def _connect_unless_stopped(self) -> Client | None:
        """The first connect, given up at once on SIGTERM (it may wait up to 30 s for NATS)."""
        connect = asyncio.create_task(bus.connect(self.settings, f"framepipe-gateway-{self.camera}"))
        while not connect.done() and not self.stopping.is_set():
            # ``stopping`` is a threading.Event (the reader thread reads it): poll it.
            await asyncio.wait({connect}, timeout=0.1)
        if connect.done():
            return connect.result()
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        log.info(
            "gateway.stopped_before_start",
            camera=self.camera,
            why="stopped while waiting for NATS; nothing was published",
        )
        return None

    async def _publish_source(self) -> SourceState:
        nc = await self._connect_unless_stopped()
        if nc is None:
            return SourceState(self.camera, redact(self.source), state="stopped")
        self.health.add_check("nats", lambda: nc.is_connected)
        self.health.ready = True
        js = nc.jetstream(timeout=10.0)
        kv = await js.key_value(Names.SOURCES_BUCKET)
        previous = await read_source_state(js, self.camera)
        state = SourceState(self.camera, redact(self.source))
        if previous is not None:
            state.next_gop, state.next_frame = previous.next_gop, previous.next_frame
            state.dropped_gops = previous.dropped_gops
            # The last measured rate stands until this run's first GOP replaces it.
            state.gops_per_s, state.fps = previous.gops_per_s, previous.fps
        state.first_gop = state.next_gop
        await self._save(kv, state)

        live = is_live(self.source)
        pacing = "live" if live else self.pacing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
        forwarder = LiveForwarder(nc, self.camera) if self.live_packets else None
        self.live = forwarder  # what it saw (B-frames, drops), for the tests and the bench
        viewers: ViewerWatch | None = None
        if forwarder is not None and self.settings.gateway.live_packets == "watched":
            viewers = watch = ViewerWatch(self.camera, self.settings.streams.viewer_ttl_s, "instant")
            await watch.start(js)  # before the first packet: a viewer who came first gets it
            forwarder.wanted = lambda: watch.watched
        on_packet = None
        if forwarder is not None and pacing == "live":
            on_packet = functools.partial(forwarder.forward_threadsafe, loop)
        reader = SourceReader(
            self.camera,
            self.source,
            self.settings.gateway,
            self.stopping,
            once=self.once,
            on_packet=on_packet,
        )
        threading.Thread(target=reader.run, args=(loop, queue, state), daemon=True).start()
        params: StreamParams | None = None
        pacer = RealtimePacer(resync_after_s=self.settings.gateway.gop_max_seconds * 2)
        drops = FullStoreDrops(self.camera)
        rate = GopRate()  # the camera's real GOPs/s, for feed-forward scaling
        #: a camera outside what the pipeline is tuned for: one warning per problem.
        check = InputCheck(InputExpectations(gop_max_s=self.settings.gateway.gop_max_seconds))
        try:
            while True:
                item = await queue.get()
                if item is END_OF_SOURCE:
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
                    await self._publish_gap(js, dataclasses.replace(item, gop=drops.index(item.gop)))
                    continue
                if isinstance(item, StreamParams):
                    params = item
                    pacer.restart()
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
                        thermal_of=self.thermal_of,
                    )
                    self._say_degraded(check.stream(params.width, params.height, params.audio_tracks))
                    continue
                if params is None or not isinstance(item, Gop):
                    raise SourceError(f"reader sent {type(item).__name__} before stream parameters")
                if pacing == "realtime":
                    # File sources played as if live: wall clock against pts, re-anchored after a jump.
                    wait = pacer.delay(item, params.time_base)
                    if forwarder is not None:
                        await forwarder.release(item, wait, params)  # each packet at its own time
                    else:
                        await asyncio.sleep(wait)
                started = time.perf_counter()
                item = drops.renumber(item)  # dense numbering after GOPs dropped for a full store
                message = gop_message(self.camera, item, params)
                headers, body = messages.encode(message)
                headers[Headers.STAGE] = "gateway"
                if not await self._publish_gop(js, item, body, headers, drops if live else None):
                    state.dropped_gops += 1  # saved with the next stored GOP: the store is full now
                    continue
                self.published += 1
                self._say_degraded(check.gop(item, params.time_base))
                state.next_gop = item.index + 1
                state.next_frame = item.frame_offset + len(item.packets)
                rate.add(item, params.time_base)
                state.gops_per_s, state.fps = round(rate.gops_per_s, 4), round(rate.fps, 3)
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
            state.lost_frames = reader.lost_frames
            if forwarder is not None:
                log.info(
                    "gateway.live_packets",
                    camera=self.camera,
                    forwarded=forwarder.forwarded,
                    dropped=forwarder.dropped,
                    unwatched=forwarder.unwatched,
                )
            if reader.lost_frames:
                log.warning("gateway.input_damaged", camera=self.camera, lost_frames=reader.lost_frames)
        except BaseException:
            state.state = "failed"
            raise
        finally:
            self.stopping.set()
            if viewers is not None:
                await viewers.stop()
            try:
                await self._save(kv, state)
            except Exception as exc:  # noqa: BLE001 - never mask the error that ended the run
                log.warning("gateway.state_not_saved", camera=self.camera, state=state.state, error=str(exc))
            finally:
                await nc.drain()
        return state

    async def _publish_gop(
        self,
        js: JetStreamContext,
        gop: Gop,
        body: bytes,
        headers: dict[str, str],
        drops: FullStoreDrops | None,
    ) -> bool:
        """Publish one GOP to its stream (VIDEO, or THERMAL for a thermal camera); False if it
        was dropped for a full store.

        File sources (``drops`` None) wait for space; live ones drop (:mod:`.store_full`).
        """
        subject = self.subject
        msg_id = Names.msg_id(self.camera, gop.index, "gateway")
        if drops is None:
            await bus.publish(js, subject, body, headers, msg_id)
            return True
        all_headers = {**headers, Headers.MSG_ID: msg_id}

        async def once() -> object:
            try:
                return await js.publish(subject, body, timeout=10.0, headers=all_headers)
            except Exception as exc:
                if is_store_full(exc):
                    raise StoreFullError(str(exc)) from exc  # not transient: no waiting
                raise

        try:
            await bus.retry_transient(once, f"publish {subject}", attempts=None)
        except StoreFullError:
            drops.drop(gop)
            return False
        if drops.dropping:
            since, down_s, count = drops.resumed(gop.index)
            reason = f"JetStream store full: {count} GOPs dropped"
            await self._publish_gap(js, Reconnected(gop.index, down_s, since, reason))
        return True

    def _say_degraded(self, found: list[Degraded]) -> None:
        for problem in found:
            log.warning(
                "gateway.input_degraded",
                camera=self.camera,
                problem=problem.problem,
                seen=problem.seen,
                what_to_do=problem.advice,
            )

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
        pixel_format=params.pixel_format,
    )
