"""A WHEP client made of aiortc: the independent receiver the WebRTC tests check the server with.

``python -m tests.whep_client URL`` connects, prints ``connected`` and then one
line per decoded frame (its stamp, ``media.stamp``) until killed: the consent
test SIGKILLs it to play a browser that vanishes without a word.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from framepipe.media.stamp import read_stamp


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]


def http(
    url: str, method: str, body: bytes = b"", content_type: str = "application/sdp", token: str = ""
) -> Reply:
    """One HTTP request; error statuses are replies, not exceptions."""
    request = urllib.request.Request(url, data=body or None, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.read().decode(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read().decode(), dict(error.headers))


async def make_offer(
    codec: str | None = None, boxes: list[dict[str, Any]] | None = None
) -> tuple[RTCPeerConnection, str]:
    """A recvonly video offer with every codec aiortc has, VP8 first as browsers list them, or
    only ``codec`` (``video/VP8`` for an offer without H.264); with ``boxes``, a ``boxes`` data
    channel whose messages are appended to it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if boxes is not None:
        channel = pc.createDataChannel("boxes")

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            boxes.append(json.loads(message))

    transceiver = pc.addTransceiver("video", direction="recvonly")
    if codec is not None:
        codecs = RTCRtpReceiver.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == codec.lower()])
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


class WhepViewer:
    """One WHEP session: connect, receive decoded frames, end with DELETE."""

    def __init__(self, base_url: str, camera: str, view: str = "", boxes: bool = False) -> None:
        self.endpoint = f"{base_url.rstrip('/')}/whep/{camera}" + (f"?view={view}" if view else "")
        #: the box messages of the ``boxes`` data channel (when asked for), as they came.
        self.boxes: list[dict[str, Any]] | None = [] if boxes else None
        self.base_url = base_url.rstrip("/")
        self.pc: RTCPeerConnection | None = None
        self.session_url = ""
        self.track: asyncio.Future[MediaStreamTrack] | None = None
        #: wall-clock time each frame of :meth:`frames` was decoded, and its RTP timestamp
        self.arrived: list[float] = []
        self.rtp: list[int | None] = []

    async def connect(self, timeout: float = 20.0) -> Reply:
        """POST the offer, apply the answer and wait for the connection; the reply either way."""
        pc, sdp = await make_offer(boxes=self.boxes)
        self.pc = pc
        loop = asyncio.get_running_loop()
        self.track = loop.create_future()
        connected = loop.create_future()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if not self.track.done():  # type: ignore[union-attr]
                self.track.set_result(track)  # type: ignore[union-attr]

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("connected", "failed", "closed") and not connected.done():
                connected.set_result(pc.connectionState)

        reply = await asyncio.to_thread(http, self.endpoint, "POST", sdp.encode())
        if reply.status != 201:
            await pc.close()
            return reply
        self.session_url = self.base_url + reply.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.body, type="answer"))
        state = await asyncio.wait_for(connected, timeout)
        if state != "connected":
            raise ConnectionError(f"WHEP session did not connect: {state}")
        return reply

    async def frames(self, until_idle_s: float = 5.0, limit: int = 0) -> list[av.VideoFrame]:
        """Decoded frames until none arrives for ``until_idle_s`` (the camera ended) or ``limit``."""
        assert self.track is not None
        track = await asyncio.wait_for(self.track, 10)
        out: list[av.VideoFrame] = []
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), until_idle_s if out else 60.0)
            except (TimeoutError, MediaStreamError):
                return out
            assert isinstance(frame, av.VideoFrame)
            out.append(frame)
            self.arrived.append(time.time())
            self.rtp.append(self._rtp_timestamp(frame))
            if limit and len(out) >= limit:
                return out

    def _rtp_timestamp(self, frame: av.VideoFrame) -> int | None:
        """The frame's RTP timestamp as sent (aiortc's receiver counts pts from its first one, and
        keeps that origin in its timestamp mapper; a browser's requestVideoFrameCallback shows it)."""
        if self.pc is None or frame.pts is None:
            return None
        receiver = self.pc.getTransceivers()[0].receiver
        origin = getattr(getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None), "_origin", None)
        return None if origin is None else (origin + frame.pts) % 2**32

    async def close(self, delete: bool = True) -> Reply | None:
        reply = None
        if delete and self.session_url:
            reply = await asyncio.to_thread(http, self.session_url, "DELETE")
        if self.pc is not None:
            await self.pc.close()
        return reply


def stamps(frames: list[av.VideoFrame]) -> list[int | None]:
    return [read_stamp(f.to_ndarray(format="rgb24")) for f in frames]


async def _main(url: str, camera: str) -> None:
    viewer = WhepViewer(url, camera)
    reply = await viewer.connect()
    if reply.status != 201:
        print(f"refused {reply.status}", flush=True)
        return
    print("connected", flush=True)
    assert viewer.track is not None
    track = await viewer.track
    while True:
        frame = await track.recv()
        assert isinstance(frame, av.VideoFrame)
        print(read_stamp(frame.to_ndarray(format="rgb24")), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
