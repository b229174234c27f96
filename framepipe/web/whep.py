"""Live view over WebRTC: a WHEP egress per camera (RFC 9725), the annotated H.264 as it is.

``POST /whep/<camera>`` with an SDP offer (``application/sdp``) answers ``201``
with the SDP answer and a ``Location`` (``/whep/session/<id>``) that ``DELETE``
ends. Nothing is re-encoded: each viewer's track hands the annotated segments'
access units (from the OUTPUT stream, demuxed, Annex B) to aiortc's H.264
payloader, paced on the wall clock at the segments' own frame times, so latency
is one GOP (the encoder works per GOP) plus processing. A viewer starts at the
next keyframe (a segment starts with one) and one that cannot keep up drops to
the next keyframe rather than buffering.

Errors, each one line (``text/plain``): 400 the offer does not parse or offers no
video; 404 no such camera (none has produced a segment yet); 406 the offer has no
H.264 (packetization-mode 1) to answer with; 415 the body is not
``application/sdp``; 503 over ``webrtc.max_viewers_per_camera`` or
``webrtc.max_viewers`` (with ``Retry-After``), or WebRTC is disabled.

A session ends on ``DELETE``, when its ICE/DTLS connection fails or closes (the
browser went away: ICE consent freshness, RFC 7675, fails after ~30 s of
silence), or when it has not connected ``webrtc.connect_timeout_s`` after the
answer. Everything runs on the web server's event loop (the one its NATS client
uses); HTTP handler threads hand requests over with ``run_coroutine_threadsafe``.

ICE offers host candidates on ``webrtc.host_addresses``: aioice skips 127.0.0.1,
so a loopback server would otherwise listen on every other interface; the
choice is process-wide (aioice has no per-connection setting).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aioice.ice
import av
import structlog
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from framepipe.core.errors import CorruptMediaError
from framepipe.core.settings import WebRtcSettings
from framepipe.media.passthrough import AccessUnit, demux_h264

log = structlog.get_logger("framepipe.web.whep")
RTP_CLOCK = 90_000
TIME_BASE = Fraction(1, RTP_CLOCK)
#: access units a viewer may have queued (about 2 s at 25 fps) before it skips to a keyframe.
TRACK_QUEUE = 50
#: a segment that arrives out of GOP order is waited for this long before it is skipped
#: (about one GOP: encoder replicas finish neighbouring GOPs up to a GOP apart).
REORDER_WAIT_S = 1.0
#: segments queued beyond this are dropped, oldest first: a live view never falls behind.
MAX_QUEUED_SEGMENTS = 4
#: sending fell this far behind the wall clock (a late segment): restart the clock at now.
RESYNC_AFTER_S = 0.5
SESSION_PATH = "/whep/session/"


class WhepError(Exception):
    """A request the server refuses: the HTTP status and one line saying what to do."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def check_offer(sdp: str) -> None:
    """Raise :class:`WhepError` unless ``sdp`` is an offer this server can answer."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises whatever the text trips
        raise WhepError(
            400, f"400: the SDP offer does not parse ({type(exc).__name__}); send a WebRTC offer"
        ) from None
    video = [m for m in parsed.media if m.kind == "video"]
    if not sdp.lstrip().startswith("v=0") or not video:
        raise WhepError(400, "400: the SDP offer has no video m-line; add a recvonly video transceiver")
    for media in video:
        if media.direction not in (None, "recvonly", "sendrecv"):
            continue
        for codec in media.rtp.codecs:
            mode = str(codec.parameters.get("packetization-mode"))
            if codec.mimeType.lower() == "video/h264" and mode == "1":
                return
    raise WhepError(406, "406: the offer has no H.264 (packetization-mode=1) video to receive; enable H.264")


def use_host_addresses(addresses: list[str]) -> None:
    """Make ICE offer host candidates on exactly ``addresses`` (every interface when empty)."""
    original = getattr(use_host_addresses, "original", aioice.ice.get_host_addresses)
    use_host_addresses.original = original  # type: ignore[attr-defined]
    if not addresses:
        aioice.ice.get_host_addresses = original
        return

    def chosen(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = chosen


class PacketTrack(MediaStreamTrack):
    """A video track whose frames are already encoded: aiortc payloads ``av.Packet``s as they are."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet[Any]] = asyncio.Queue(maxsize=TRACK_QUEUE)
        self._started = False
        self.dropped = 0

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
        return await self._queue.get()


@dataclass
class _Pending:
    gop: int
    data: bytes
    arrived: float


class CameraFeed:
    """One camera's annotated segments, in GOP order and on the wall clock, to its viewers' tracks."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.tracks: set[PacketTrack] = set()
        self._pending: dict[int, _Pending] = {}
        self._next_gop: int | None = None
        self._wake = asyncio.Event()
        self._anchor: tuple[float, float] | None = None  # (wall clock, dts) of the clock's start
        self._epoch = time.time()
        self.sent = 0
        self.skipped: list[int] = []
        self.delays: deque[float] = deque(maxlen=100)
        self.captured: dict[int, float] = {}
        self.task = asyncio.ensure_future(self._run())

    def add_segment(self, gop: int, data: bytes) -> None:
        if self._next_gop is not None and gop < self._next_gop:
            self._skip(gop, "late")  # arrived after a later GOP was sent: a live view skips it
            return
        self._pending[gop] = _Pending(gop, data, time.monotonic())
        while len(self._pending) > MAX_QUEUED_SEGMENTS:
            self._skip(min(self._pending), "behind")
            del self._pending[min(self._pending)]
        self._wake.set()

    def _skip(self, gop: int, reason: str) -> None:
        self.skipped.append(gop)
        log.warning("whep.gop_skipped", camera=self.camera, gop=gop, reason=reason)

    def add_capture(self, gop: int, stored_at: float) -> None:
        """When the camera's GOP reached VIDEO (≈ when its last frame was captured)."""
        self.captured[gop] = stored_at
        while len(self.captured) > 64:
            del self.captured[min(self.captured)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def _ready(self) -> _Pending | float | None:
        """The next segment to send, else seconds until the head-of-line wait ends, else None."""
        if not self._pending:
            return None
        first = self._pending[min(self._pending)]
        if self._next_gop is None or first.gop == self._next_gop:
            return self._pending.pop(first.gop)
        waited = time.monotonic() - first.arrived
        if waited >= REORDER_WAIT_S:
            for gop in range(self._next_gop, first.gop):
                self._skip(gop, "missing")  # lost (dead-lettered) or very late
            return self._pending.pop(first.gop)
        return REORDER_WAIT_S - waited

    async def _run(self) -> None:
        while True:
            ready = self._ready()
            if not isinstance(ready, _Pending):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), ready)
                continue
            self._next_gop = ready.gop + 1
            try:
                units = demux_h264(ready.data)
            except CorruptMediaError as exc:
                log.warning("whep.bad_segment", camera=self.camera, gop=ready.gop, error=str(exc))
                continue
            await self._send(ready.gop, units)

    async def _send(self, gop: int, units: list[AccessUnit]) -> None:
        if not units:
            return
        last_pts = max(u.pts_s for u in units)
        for unit in units:
            now = time.time()
            if self._anchor is None:
                self._anchor = (now, unit.dts_s)
            due = self._anchor[0] + unit.dts_s - self._anchor[1]
            if due < now - RESYNC_AFTER_S or due > now + 5.0:
                self._anchor = (now, unit.dts_s)  # a late segment or a timestamp jump
                due = now
            if due > now:
                await asyncio.sleep(due - now)
            shown = self._anchor[0] + unit.pts_s - self._anchor[1]
            ticks = round((shown - self._epoch) * RTP_CLOCK)
            for track in list(self.tracks):
                track.offer(unit, ticks)
            self.sent += 1
            if gop in self.captured:
                self.delays.append(time.time() - (self.captured[gop] - (last_pts - unit.pts_s)))

    def delay_s(self) -> float | None:
        """Median capture-to-send delay of the recent frames (needs the VIDEO timestamps)."""
        return round(statistics.median(self.delays), 3) if self.delays else None


@dataclass
class Session:
    id: str
    camera: str
    pc: RTCPeerConnection
    track: PacketTrack
    created: float = field(default_factory=time.monotonic)
    watchdog: asyncio.Task[None] | None = None


#: start following one camera's VIDEO timestamps (for the delay shown); returns the stop.
CaptureFollower = Callable[[CameraFeed], Any]


class WhepHub:
    """Every WHEP session of one web server, and one feed per watched camera."""

    def __init__(
        self,
        settings: WebRtcSettings,
        *,
        known_camera: Callable[[str], Awaitable[bool]],
        loopback: bool,
        follow_captures: CaptureFollower | None = None,
    ) -> None:
        self.settings = settings
        self.known_camera = known_camera
        self.follow_captures = follow_captures
        self.sessions: dict[str, Session] = {}
        self.feeds: dict[str, CameraFeed] = {}
        self._followers: dict[str, Any] = {}
        addresses = [a.strip() for a in settings.host_addresses.split(",") if a.strip()]
        use_host_addresses(addresses or (["127.0.0.1"] if loopback else []))

    def _configuration(self) -> RTCConfiguration:
        # An explicit (possibly empty) list: aiortc's default would ask Google's STUN server.
        urls = self.settings.ice_urls
        servers = [
            RTCIceServer(
                urls=urls,
                username=self.settings.ice_username or None,
                credential=self.settings.ice_credential or None,
            )
        ]
        return RTCConfiguration(iceServers=servers if urls else [])

    def viewers(self, camera: str) -> int:
        # list(): HTTP handler threads read while the event loop changes the dict.
        return sum(1 for s in list(self.sessions.values()) if s.camera == camera)

    async def create(self, camera: str, sdp: str) -> tuple[str, str]:
        """A new session for ``camera`` from an SDP offer: (session id, SDP answer)."""
        if not self.settings.enabled:
            raise WhepError(503, "503: WebRTC is disabled (webrtc.enabled = false); use HLS")
        if not await self.known_camera(camera):
            raise WhepError(404, f"404: camera {camera!r} has produced no video yet; see `framepipe cameras`")
        check_offer(sdp)
        if len(self.sessions) >= self.settings.max_viewers:
            raise WhepError(
                503, f"503: this server has {len(self.sessions)} viewers (webrtc.max_viewers); retry later", 5
            )
        if self.viewers(camera) >= self.settings.max_viewers_per_camera:
            raise WhepError(
                503,
                f"503: {camera} has {self.viewers(camera)} viewers (webrtc.max_viewers_per_camera); retry",
                5,
            )
        pc = RTCPeerConnection(self._configuration())
        track = PacketTrack()
        session = Session(secrets.token_urlsafe(16), camera, pc, track)
        # Counted before the first await, so parallel offers cannot overshoot the limits.
        self.sessions[session.id] = session
        try:
            # The transceiver exists before the offer is applied, so the offer's video m-line takes
            # it and its H.264-only preference (browsers list VP8 first; we have only H.264 to send).
            transceiver = pc.addTransceiver(track, direction="sendonly")
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == "video/h264"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except WhepError:
            await self._end(session.id, "rejected")
            raise
        except Exception as exc:  # noqa: BLE001 - aiortc raises plain exceptions for bad offers
            await self._end(session.id, "rejected")
            reason = str(exc)[:100]
            raise WhepError(400, f"400: cannot answer this offer ({reason}); send a WebRTC offer") from None

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._end(session.id, pc.connectionState)

        session.watchdog = asyncio.ensure_future(self._watch_connect(session))
        feed = self.feeds.get(camera)
        if feed is None:
            feed = self.feeds[camera] = CameraFeed(camera)
            if self.follow_captures is not None:
                self._followers[camera] = await self.follow_captures(feed)
        feed.tracks.add(track)
        log.info("whep.session", camera=camera, session=session.id[:8], viewers=self.viewers(camera))
        return session.id, pc.localDescription.sdp

    async def _watch_connect(self, session: Session) -> None:
        await asyncio.sleep(self.settings.connect_timeout_s)
        if session.id in self.sessions and session.pc.connectionState != "connected":
            session.watchdog = None  # this task is the one ending it: do not cancel itself
            await self._end(session.id, "connect_timeout")

    async def delete(self, session_id: str) -> bool:
        return await self._end(session_id, "deleted")

    async def _end(self, session_id: str, reason: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if session.watchdog is not None and session.watchdog is not asyncio.current_task():
            session.watchdog.cancel()
        session.track.stop()
        feed = self.feeds.get(session.camera)
        if feed is not None:
            feed.tracks.discard(session.track)
            if not feed.tracks:
                await self._close_feed(session.camera)
        await session.pc.close()
        # aiortc starts a sender when DTLS connects (a task of its own): a close that lands in
        # between stops nothing, and that sender's RTCP loop would run forever. Stop them again.
        await asyncio.sleep(0)
        for transceiver in session.pc.getTransceivers():
            with contextlib.suppress(Exception):
                await transceiver.sender.stop()
        log.info("whep.session_end", camera=session.camera, session=session_id[:8], reason=reason)
        return True

    async def _close_feed(self, camera: str) -> None:
        feed = self.feeds.pop(camera, None)
        if feed is not None:
            await feed.close()
        follower = self._followers.pop(camera, None)
        if follower is not None:
            with contextlib.suppress(Exception):
                await follower.unsubscribe()

    def on_segment(self, camera: str, gop: int, data: bytes) -> None:
        feed = self.feeds.get(camera)
        if feed is not None:
            feed.add_segment(gop, data)

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self._end(session_id, "server_stopping")
        for camera in list(self.feeds):
            await self._close_feed(camera)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per watched camera: viewers, frames sent, capture-to-send delay."""
        return {
            camera: {
                "viewers": self.viewers(camera),
                "sent": feed.sent,
                "skipped_gops": len(feed.skipped),
                "delay_s": feed.delay_s(),
            }
            for camera, feed in list(self.feeds.items())
        }
