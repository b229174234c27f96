"""The instant live view: the camera's own H.264 to WHEP viewers as the gateway reads it, boxes beside it.

``POST /whep/<camera>?view=instant`` (``web/whep.py`` makes the session). The
feed subscribes to ``live.<camera>`` (core NATS: the gateway forwards every packet
as it reads it, :mod:`framepipe.stages.gateway.live`) and hands each packet, as Annex
B with the SPS/PPS in front of keyframes, straight to the viewers' encoded-frame
tracks: nothing waits for a GOP to end, nothing is re-encoded. A viewer starts at
the next keyframe (:class:`~framepipe.web.packet_track.PacketTrack`), so one that
joins mid-GOP sees nothing until then rather than a broken picture.

Boxes: the feed also subscribes to ``dets.<camera>`` (the DETECTIONS product
stream's subject, read as core NATS: no consumer, nothing replayed) and sends each
frame's detections on the viewers' ``boxes`` data channels with the RTP timestamp of
that frame, which the console compares with the frame on screen to draw a box that
is behind the picture as late (faded) where it last was.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import OrderedDict, deque
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from framepipe.core import messages
from framepipe.core.errors import CorruptMediaError, SchemaError
from framepipe.core.topology import Names
from framepipe.media.live_packets import LivePacket, annex_b, avcc_parameter_sets
from framepipe.media.passthrough import AccessUnit
from framepipe.media.reorder import BFRAMES_ADVICE, ReorderDetector
from framepipe.web.packet_track import RTP_CLOCK, PacketTrack

log = structlog.get_logger("framepipe.web.instant")
#: a packet whose pts puts it this far from the wall clock (a jump, a restarted gateway,
#: drift) re-anchors the RTP clock at now, so timestamps keep rising.
RESYNC_AFTER_S = 1.0
#: pts → RTP ticks of the recent packets, to time the boxes that arrive for them later.
RECENT_FRAMES = 600


class InstantFeed:
    """One camera's packets from ``live.<camera>`` and boxes from ``dets.<camera>`` to its viewers."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.tracks: set[PacketTrack] = set()
        self._subscriptions: list[Subscription] = []
        self._extradata: bytes | None = None
        self._parameter_sets: list[bytes] = []
        self._length_size = 0  # Annex B until an avcC extradata says otherwise
        self._anchor: tuple[float, float] | None = None  # (wall clock, pts in seconds)
        self._epoch = time.time()
        self._time_base: Any = None
        self._ticks_by_pts: OrderedDict[int, int] = OrderedDict()
        self._last_seq: int | None = None
        self._warned: set[str] = set()
        self.sent = 0
        self.lost = 0  # packets the gateway forwarded that never came (seq gaps)
        self.boxes = 0
        self.delays: deque[float] = deque(maxlen=100)
        #: B-frames in the camera's stream (the console tile says what to change on the camera).
        self.reorder = ReorderDetector()

    async def start(self, nc: Client) -> None:
        self._subscriptions.append(await nc.subscribe(Names.live_subject(self.camera), cb=self._on_packet))
        self._subscriptions.append(
            await nc.subscribe(Names.subject(Names.DETECTIONS, self.camera), cb=self._on_detections)
        )

    async def close(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()

    def _warn_once(self, event: str, **fields: Any) -> None:
        if event not in self._warned:
            self._warned.add(event)
            log.warning(event, camera=self.camera, **fields)

    async def _on_packet(self, msg: Msg) -> None:
        try:
            packet = LivePacket.decode(msg.data)
        except CorruptMediaError as exc:
            self._warn_once(
                "instant.bad_packet", error=str(exc), detail="gateway and web server versions differ?"
            )
            return
        self.add_packet(packet)

    def add_packet(self, packet: LivePacket) -> None:
        """Hand one of the camera's packets to every viewer (a keyframe refreshes the SPS/PPS)."""
        if packet.codec != "h264":
            self._warn_once(
                "instant.not_h264",
                codec=packet.codec,
                detail="WebRTC here sends H.264 only; use view=annotated",
            )
            return
        if self._last_seq is not None and packet.seq > self._last_seq + 1:
            self.lost += packet.seq - self._last_seq - 1
        self._last_seq = packet.seq
        try:
            if packet.keyframe and packet.extradata and packet.extradata != self._extradata:
                self._parameter_sets, self._length_size = avcc_parameter_sets(packet.extradata)
                self._extradata = packet.extradata
            data = annex_b(packet, self._parameter_sets, self._length_size)
        except CorruptMediaError as exc:
            self._warn_once("instant.bad_h264", error=str(exc), detail="the camera's packets are dropped")
            return
        self._time_base = packet.time_base
        if self.reorder.see(packet.pts, packet.keyframe):
            self._warn_once("instant.camera_sends_bframes", detail=BFRAMES_ADVICE)
        ticks = self._ticks(packet.pts_s)
        self._ticks_by_pts[packet.pts] = ticks
        while len(self._ticks_by_pts) > RECENT_FRAMES:
            self._ticks_by_pts.popitem(last=False)
        unit = AccessUnit(data, packet.pts_s, packet.dts_s, packet.keyframe)
        for track in list(self.tracks):
            track.offer(unit, ticks)
        self.sent += 1
        self.delays.append(time.time() - packet.read_at)

    def _ticks(self, pts_s: float) -> int:
        now = time.time()
        if self._anchor is None or abs(self._anchor[0] + pts_s - self._anchor[1] - now) > RESYNC_AFTER_S:
            self._anchor = (now, pts_s)
        shown = self._anchor[0] + pts_s - self._anchor[1]
        return round((shown - self._epoch) * RTP_CLOCK)

    async def _on_detections(self, msg: Msg) -> None:
        try:
            dets = messages.decode(msg.headers, msg.data, messages.DetectionsMessage)
        except SchemaError:
            return  # a gap event (or a foreign message) on the camera's subject: not boxes
        if not self.tracks or self._anchor is None:
            return
        frames = [f.to_wire() for f in dets.frames]
        ticks = [self._frame_ticks(f.pts) for f in dets.frames]
        for track in list(self.tracks):
            track.send_boxes(frames, ticks)
        self.boxes += 1

    def _frame_ticks(self, pts: int) -> int:
        known = self._ticks_by_pts.get(pts)
        if known is not None or self._anchor is None or self._time_base is None:
            return known or 0
        shown = self._anchor[0] + float(pts * self._time_base) - self._anchor[1]
        return round((shown - self._epoch) * RTP_CLOCK)

    def warning(self) -> str | None:
        """What the viewer should know about this camera's stream (None: nothing)."""
        return BFRAMES_ADVICE if self.reorder.reordered else None

    def delay_s(self) -> float | None:
        """Median read-to-send delay of the recent packets (gateway read → this server sent)."""
        return round(statistics.median(self.delays), 3) if self.delays else None
