"""An encoded-frame WebRTC track (aiortc payloads ``av.Packet``s as they are) and its boxes channel.

Both live paths use it: the annotated segments' access units (``web/whep.py``) and the
camera's own packets (``web/instant.py``). A viewer starts at a keyframe and one whose
connection cannot keep up skips to the next keyframe rather than buffering.

Boxes go to the viewer on the WebRTC data channel its offer opened (``boxes``), each
frame's detections with the RTP timestamp of the frame they belong to, as the browser
sees it (``requestVideoFrameCallback``'s ``rtpTimestamp``), so the console can tell a box
that is behind the picture. aiortc adds a random origin to the timestamps it is given and
keeps it in a local variable; the sender records the last timestamp it sent, which with
the last one given here yields the origin (:meth:`PacketTrack.rtp_timestamp`).
"""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from framepipe.media.passthrough import AccessUnit

RTP_CLOCK = 90_000
TIME_BASE = Fraction(1, RTP_CLOCK)
#: access units a viewer may have queued (about 2 s at 25 fps) before it skips to a keyframe.
TRACK_QUEUE = 50
#: box messages a data channel may have buffered before new ones are dropped (a stalled viewer).
CHANNEL_BUFFER_BYTES = 256 * 1024


class PacketTrack(MediaStreamTrack):
    """A video track whose frames are already encoded: aiortc payloads ``av.Packet``s as they are."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet[Any]] = asyncio.Queue(maxsize=TRACK_QUEUE)
        self._started = False
        self.dropped = 0
        #: the viewer's ``boxes`` data channel, once its offer opened one.
        self.channel: RTCDataChannel | None = None
        self.sender: RTCRtpSender | None = None
        self._last_ticks: int | None = None  # of the packet recv() handed out last
        self._origin: int | None = None
        self.boxes_sent = 0

    def offer(self, unit: AccessUnit, rtp_ticks: int) -> None:
        if not self._started and not unit.keyframe:
            return  # a decoder can start only at a keyframe
        if self._queue.full():
            # The viewer's connection cannot keep up: start again at the next keyframe.
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._started = False
            if not unit.keyframe:
                return
        packet = av.Packet(unit.data)
        packet.pts = packet.dts = rtp_ticks
        packet.time_base = TIME_BASE
        self._started = True
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._origin is None and self._last_ticks is not None and self.sender is not None:
            # aiortc sends a packet completely before asking for the next one.
            sent = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", 0)
            if sent:
                self._origin = (sent - self._last_ticks) % 2**32
        packet = await self._queue.get()
        self._last_ticks = int(packet.pts or 0)
        return packet

    def rtp_timestamp(self, ticks: int) -> int | None:
        """The RTP timestamp the browser sees for ``ticks``; None until the first frame went out."""
        return None if self._origin is None else (self._origin + ticks) % 2**32

    def send_boxes(self, frames: list[dict[str, Any]], ticks: list[int]) -> None:
        """Detections of some frames (wire form) with each frame's ticks, on the boxes channel."""
        channel = self.channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > CHANNEL_BUFFER_BYTES:
            return
        rows = []
        for frame, tick in zip(frames, ticks, strict=True):
            rtp = self.rtp_timestamp(tick)
            rows.append({**frame, "rtp": rtp})
        channel.send(json.dumps({"type": "boxes", "frames": rows}, separators=(",", ":")))
        self.boxes_sent += 1
