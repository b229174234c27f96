"""The instant live view's source: each packet to ``live.<camera>`` as the gateway reads it.

Core NATS, not JetStream: nothing is stored or acknowledged. With ``gateway.live_packets =
"watched"`` (the default) packets go out only while someone watches the camera's instant
view (``instant.<camera>`` in FP_VIEWERS, :class:`~framepipe.core.viewers.ViewerWatch`):
a viewer starts at a keyframe anyway, and the web server writes the key before it answers
the viewer, so starting late costs no frame a viewer could show. Unwatched, a packet costs
nothing but the check (``bench/gateway_live_cpu.py``). Lossy
by design: when the connection is down or its outgoing buffer holds more than
:data:`MAX_PENDING_BYTES`, packets are dropped (and counted) rather than delaying the
GOPs that go to VIDEO. Keyframes carry the stream's extradata, so a viewer can start
at any keyframe (:mod:`framepipe.media.live_packets`).

A live source (RTSP) is forwarded from the demux thread the moment a packet is read;
a file played in real time is forwarded packet by packet at each packet's own time
(:meth:`LiveForwarder.release`), so it looks like a camera to a viewer too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction

import structlog
from nats.aio.client import Client

from framepipe.core.topology import Names
from framepipe.media.gop import DemuxedPacket, Gop
from framepipe.media.live_packets import MAX_PACKET_BYTES, LivePacket
from framepipe.media.reorder import BFRAMES_ADVICE, ReorderDetector
from framepipe.stages.gateway.reader import StreamParams

log = structlog.get_logger("framepipe.gateway")
#: outgoing bytes the NATS client may hold before live packets are dropped (~2 s of 4 Mbit/s).
MAX_PENDING_BYTES = 1024 * 1024


class LiveForwarder:
    """Publishes one camera's packets to ``live.<camera>``, fire-and-forget."""

    def __init__(self, nc: Client, camera: str) -> None:
        self.nc = nc
        self.camera = camera
        self.subject = Names.live_subject(camera)
        self.forwarded = 0
        self.dropped = 0
        #: packets not sent because nobody watched the instant view.
        self.unwatched = 0
        #: whether anyone watches now (a ViewerWatch's ``watched``; always, by default).
        self.wanted: Callable[[], bool] = lambda: True
        self._warned_size = False
        self.reorder = ReorderDetector()  # B-frames: said once, the packets are sent anyway
        self._tasks: set[asyncio.Task[None]] = set()  # fire-and-forget, but referenced until done

    def _check_order(self, packet: DemuxedPacket) -> None:
        if self.reorder.see(packet.pts, packet.keyframe):
            log.warning("gateway.camera_sends_bframes", camera=self.camera, detail=BFRAMES_ADVICE)

    def _admit(self, packet: DemuxedPacket) -> bool:
        """Whether to send ``packet``: someone watches (B-frames are said once either way)."""
        self._check_order(packet)
        if self.wanted():
            return True
        self.unwatched += 1
        return False

    async def forward(
        self, packet: DemuxedPacket, params: StreamParams, read_at: float | None = None
    ) -> None:
        """Publish ``packet`` now (on the event loop) if someone watches; drop it when the bus
        cannot take it at once."""
        if self._admit(packet):
            await self._publish(packet, params, read_at)

    async def _publish(self, packet: DemuxedPacket, params: StreamParams, read_at: float | None) -> None:
        if len(packet.data) > MAX_PACKET_BYTES:
            self.dropped += 1
            if not self._warned_size:
                self._warned_size = True
                log.warning(
                    "gateway.live_packet_too_big",
                    camera=self.camera,
                    bytes=len(packet.data),
                    limit=MAX_PACKET_BYTES,
                    detail="not sent to the instant view (the GOP still goes to VIDEO); lower the bitrate",
                )
            return
        if not self.nc.is_connected or self.nc.pending_data_size > MAX_PENDING_BYTES:
            self.dropped += 1
            return
        live = LivePacket(
            codec=params.codec,
            pts=packet.pts,
            dts=packet.dts,
            time_base=params.time_base,
            keyframe=packet.keyframe,
            seq=self.forwarded,
            read_at=read_at if read_at is not None else time.time(),
            data=packet.data,
            extradata=(params.extradata or b"") if packet.keyframe else b"",
        )
        try:
            await self.nc.publish(self.subject, live.encode())
        except Exception:  # noqa: BLE001 - the instant view is best effort; VIDEO is what counts
            self.dropped += 1
            return
        self.forwarded += 1

    def forward_threadsafe(
        self, loop: asyncio.AbstractEventLoop, packet: DemuxedPacket, params: StreamParams
    ) -> None:
        """From the demux thread: hand the packet to the loop and return at once (never blocks)."""
        if self._admit(packet):  # unwatched: the loop is not even woken
            loop.call_soon_threadsafe(self._start, packet, params, time.time())

    def _start(self, packet: DemuxedPacket, params: StreamParams, read_at: float) -> None:
        task = asyncio.ensure_future(self._publish(packet, params, read_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def release(self, gop: Gop, wait_s: float, params: StreamParams) -> None:
        """A file played in real time: forward each packet of ``gop`` at its own time.

        ``wait_s`` is when the GOP's last frame is due (the real-time pacer's delay); the
        call returns then, as the plain sleep it replaces would.
        """
        if not self.wanted():  # one wake-up per GOP, not one per packet
            for packet in gop.packets:
                self._check_order(packet)
            self.unwatched += len(gop.packets)
            await asyncio.sleep(wait_s)
            return
        time_base: Fraction = params.time_base
        last_due = time.monotonic() + wait_s
        last_pts = max(p.pts for p in gop.packets)
        due = 0.0
        for packet in gop.packets:  # decode order; times never go backwards (B-frames)
            due = max(due, last_due - float((last_pts - packet.pts) * time_base))
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.forward(packet, params)
        rest = last_due - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
