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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import structlog
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription

from framepipe.core.settings import WebRtcSettings
from framepipe.core.viewers import VIEWS
from framepipe.web.instant import InstantFeed
from framepipe.web.packet_track import PacketTrack
from framepipe.web.whep_feed import CameraFeed

log = structlog.get_logger("framepipe.web.whep")
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


@dataclass
class Session:
    id: str
    camera: str
    pc: RTCPeerConnection
    track: PacketTrack
    view: str = "annotated"
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
        instant_feed: Callable[[str], Awaitable[InstantFeed]] | None = None,
    ) -> None:
        self.settings = settings
        self.known_camera = known_camera
        self.follow_captures = follow_captures
        self.sessions: dict[str, Session] = {}
        self.feeds: dict[str, CameraFeed] = {}
        #: started and subscribed by the server (it owns the NATS connection).
        self.instant_feed = instant_feed
        self.instant_feeds: dict[str, InstantFeed] = {}
        self._instant_starting: dict[str, asyncio.Future[InstantFeed]] = {}
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

    async def create(self, camera: str, sdp: str, view: str = "annotated") -> tuple[str, str]:
        """A new session for ``camera`` from an SDP offer: (session id, SDP answer)."""
        if not self.settings.enabled:
            raise WhepError(503, "503: WebRTC is disabled (webrtc.enabled = false); use HLS")
        if view not in VIEWS or (view == "instant" and self.instant_feed is None):
            raise WhepError(400, f"400: view must be one of {', '.join(VIEWS)}, got {view[:20]!r}")
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
        session = Session(secrets.token_urlsafe(16), camera, pc, track, view)
        # Counted before the first await, so parallel offers cannot overshoot the limits.
        self.sessions[session.id] = session
        try:
            # The transceiver exists before the offer is applied, so the offer's video m-line takes
            # it and its H.264-only preference (browsers list VP8 first; we have only H.264 to send).
            transceiver = pc.addTransceiver(track, direction="sendonly")
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == "video/h264"])
            track.sender = transceiver.sender
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

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            if channel.label == "boxes":
                track.channel = channel

        session.watchdog = asyncio.ensure_future(self._watch_connect(session))
        if view == "instant":
            await self._watch_instant(camera, track)
            log.info(
                "whep.session", camera=camera, session=session.id[:8], view=view, viewers=self.viewers(camera)
            )
            return session.id, pc.localDescription.sdp
        feed = self.feeds.get(camera)
        if feed is None:
            feed = self.feeds[camera] = CameraFeed(
                camera, self.settings.catch_up_speed, self.settings.catch_up_above_s
            )
            if self.follow_captures is not None:
                self._followers[camera] = await self.follow_captures(feed)
        feed.tracks.add(track)
        log.info("whep.session", camera=camera, session=session.id[:8], viewers=self.viewers(camera))
        return session.id, pc.localDescription.sdp

    async def _watch_instant(self, camera: str, track: PacketTrack) -> None:
        feed = self.instant_feeds.get(camera)
        if feed is None and self.instant_feed is not None:
            # One start per camera: viewers who arrive while it starts (subscriptions, the
            # FP_VIEWERS key: round trips) wait for the same feed instead of making their own.
            starting = self._instant_starting.get(camera)
            if starting is None:
                starting = self._instant_starting[camera] = asyncio.ensure_future(self._start_instant(camera))
            feed = await asyncio.shield(starting)
        if feed is not None:
            feed.tracks.add(track)

    async def _start_instant(self, camera: str) -> InstantFeed:
        """Start ``camera``'s feed and register it, in one step as the other viewers see it."""
        assert self.instant_feed is not None
        try:
            feed = self.instant_feeds[camera] = await self.instant_feed(camera)
            return feed
        finally:
            del self._instant_starting[camera]

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
        instant = self.instant_feeds.get(session.camera)
        if instant is not None and session.track in instant.tracks:  # not a feed still starting
            instant.tracks.discard(session.track)
            if not instant.tracks:
                del self.instant_feeds[session.camera]
                await instant.close()
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

    def on_segment(
        self, camera: str, gop: int, data: bytes, frames: list[dict[str, Any]] | None = None
    ) -> None:
        feed = self.feeds.get(camera)
        if feed is not None:
            feed.add_segment(gop, data, frames)

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self._end(session_id, "server_stopping")
        for camera in list(self.feeds):
            await self._close_feed(camera)
        for camera in list(self.instant_feeds):
            await self.instant_feeds.pop(camera).close()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per watched camera: viewers, frames sent, capture-to-send delay (and the instant view's)."""
        out: dict[str, dict[str, Any]] = {
            camera: {
                "viewers": self.viewers(camera),
                "sent": feed.sent,
                "skipped_gops": len(feed.skipped),
                "delay_s": feed.delay_s(),
            }
            for camera, feed in list(self.feeds.items())
        }
        for camera, instant in list(self.instant_feeds.items()):
            out.setdefault(camera, {"viewers": self.viewers(camera)})["instant"] = {
                "sent": instant.sent,
                "lost": instant.lost,
                "boxes": instant.boxes,
                "delay_s": instant.delay_s(),
                "warning": instant.warning(),
            }
        return out
