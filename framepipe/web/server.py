"""HTTP server: HLS from the OUTPUT stream, the web console and its JSON API (this module:
the server's NATS side and lifecycle; the paths it serves in :mod:`.routes`, the handler in
:mod:`.http_handler`, token rules in :mod:`.auth`, the WebRTC live view in :mod:`.whep`, the
buckets' view of each camera in :mod:`.cameras`, the stages' backlog in :mod:`.pipeline_status`).

Segments are served from JetStream (an ordered consumer keeps the index, a direct get
fetches a segment's bytes), so any number of encoder replicas on any machines feed one
server with no shared filesystem. Binds 127.0.0.1 unless told otherwise; bound to any
other address (or with ``web.require_token = "always"``) every path but ``/healthz``
needs a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from framepipe.core import bus, gallery, messages
from framepipe.core.errors import FramepipeError, SchemaError
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.sources import read_source_state
from framepipe.core.topology import CAMERA_NAME, Names
from framepipe.media.overlay import segment_metadata
from framepipe.web import events_api, whep_http
from framepipe.web.auth import is_loopback, presented_token, resolve_token
from framepipe.web.cameras import CameraStates, registered_only
from framepipe.web.http_handler import make_handler
from framepipe.web.index import LiveIndex, OutputIndex, Segment
from framepipe.web.instant import InstantFeed
from framepipe.web.pipeline_status import ReplicaCount, no_replicas, pipeline_status
from framepipe.web.presence import ViewerPresence
from framepipe.web.routes import HLS_JS
from framepipe.web.whep import WhepHub
from framepipe.web.whep_feed import CameraFeed

#: how long shutdown waits for the NATS side to close before cancelling what is left.
SHUTDOWN_STEP_S = 6.0

__all__ = ["HLS_JS", "WebServer", "is_loopback", "presented_token", "resolve_token"]
log = structlog.get_logger("framepipe.web")
T = TypeVar("T")


class WebServer:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8090,
        window: int = 6,
        replicas: ReplicaCount = no_replicas,
        describe: events_api.Describe | None = None,
    ) -> None:
        self.settings = settings
        self.describe = describe
        self.host, self.port = host, port
        self.token = resolve_token(settings.web, host)
        self.index = OutputIndex(window=window)
        self.live = LiveIndex(window=window)
        self.replicas = replicas
        self._loop = asyncio.new_event_loop()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._http: ThreadingHTTPServer | None = None
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watcher: asyncio.Future[None] | None = None
        #: the ordered consumers: unsubscribed at shutdown, so their heartbeat tasks end too.
        self._subscriptions: list[Any] = []
        self.whep: WhepHub | None = None
        self.presence = ViewerPresence(settings.streams.viewer_ttl_s, self._loop)
        self._presence_task: asyncio.Future[None] | None = None
        self.camera_states = CameraStates(settings.output.mode)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def registered(self) -> set[str]:
        """Cameras whose gateway registered (FP_SOURCES), listed before their first segment."""
        return self.camera_states.registered

    @property
    def open_url(self) -> str:
        """The URL to open: with the token when one is needed (print it, never log it)."""
        return f"{self.url}?token={self.token}" if self.token else self.url

    def authorized(self, token: str) -> bool:
        return self.token is None or hmac.compare_digest(token.encode(), self.token.encode())

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> WebServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def loop_main() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._connect())
            except BaseException as exc:  # noqa: BLE001 - re-raised in start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        thread = threading.Thread(target=loop_main, daemon=True, name="web-nats")
        thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        self._http = ThreadingHTTPServer((self.host, self.port), make_handler(self))
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        http_thread = threading.Thread(target=self._http.serve_forever, daemon=True, name="web-http")
        http_thread.start()
        self._threads = [thread, http_thread]
        log.info("web.started", url=self.url)
        return self

    def stop(self) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), 10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        for thread in self._threads:
            thread.join(5.0)

    async def _shutdown(self) -> None:
        try:
            await asyncio.wait_for(self._close_clients(), SHUTDOWN_STEP_S)
        except Exception as exc:  # noqa: BLE001 - a timeout too: shutting down anyway
            log.debug("web.shutdown_incomplete", error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            # The client's own tasks (subscription readers, heartbeats) end here, on this loop,
            # not as "Task was destroyed but it is pending!" when the loop stops, even when a
            # step above failed or a dead server made it time out.
            left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=2.0)

    async def _close_clients(self) -> None:
        for task in (self._presence_task, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.whep is not None:
            await self.whep.close()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):  # a closed connection has nothing to unsubscribe
                await subscription.unsubscribe()
        if self._nc is not None:
            await self._nc.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- NATS side (event loop thread) -------------------------------------
    async def _connect(self) -> None:
        self._nc = await bus.connect(self.settings, "framepipe-web")
        self._js = self._nc.jetstream(timeout=10.0)
        for subject, callback in ((Names.OUTPUT, self._on_segment), (Names.DLQ, self._on_dead_letter)):
            subscription = await self._js.subscribe(
                Names.wildcard(subject),
                cb=callback,
                ordered_consumer=True,
                deliver_policy=js_api.DeliverPolicy.ALL,
            )
            self._subscriptions.append(subscription)
        self._watcher = asyncio.ensure_future(self._watch_sources())
        self.whep = WhepHub(
            self.settings.webrtc,
            known_camera=self._known_camera,
            loopback=is_loopback(self.host),
            follow_captures=self._follow_captures,
            instant_feed=self._instant_feed,
        )
        await self.presence.start(self._js)
        whep = self.whep
        self._presence_task = asyncio.ensure_future(self.presence.follow(lambda: self._watched_views(whep)))

    @staticmethod
    def _watched_views(whep: WhepHub) -> list[tuple[str, str]]:
        """(camera, view) of every open WHEP feed: annotated ones drive on-demand burn-in,
        instant ones the gateway's live packets."""
        annotated = [(camera, "annotated") for camera in list(whep.feeds)]
        return annotated + [(camera, "instant") for camera in list(whep.instant_feeds)]

    async def _instant_feed(self, camera: str) -> InstantFeed:
        """The camera's packets from live.<camera> and boxes from dets.<camera> (core NATS)."""
        assert self._nc is not None
        feed = InstantFeed(camera)
        await feed.start(self._nc)
        # The gateway forwards packets only while instant.<camera> is in FP_VIEWERS: written
        # before the answer, so the viewer's first keyframe is the gateway's next one.
        await self.presence.mark(camera, "webrtc", "instant")
        return feed

    async def _known_camera(self, camera: str) -> bool:
        """A camera with segments, or one whose gateway has registered (a viewer may come first)."""
        if camera in self.index.cameras():
            return True
        assert self._js is not None
        try:
            return await read_source_state(self._js, camera) is not None
        except Exception:  # noqa: BLE001 - no state (or no bucket yet): not a camera
            return False

    async def _follow_captures(self, feed: CameraFeed) -> Any:
        """VIDEO headers of one camera: when each GOP was captured, for the live delay shown."""
        assert self._js is not None

        async def on_gop(msg: Msg) -> None:
            gop = (msg.headers or {}).get(Headers.GOP, "")
            if gop.isdigit():
                feed.add_capture(int(gop), msg.metadata.timestamp.timestamp())

        return await self._js.subscribe(
            Names.subject(Names.VIDEO, feed.camera),
            cb=on_gop,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
            headers_only=True,
        )

    async def _on_segment(self, msg: Msg) -> None:
        try:
            seg = messages.decode(msg.headers, msg.data, messages.SegmentMessage)
        except SchemaError:
            return
        if seg.rendition == "clip":
            return  # an event clip's GOP: the sink's file under clips/, neither playlist's
        meta = msg.metadata
        live = seg.rendition == "live"
        stored_at = meta.timestamp.timestamp()
        (self.live if live else self.index).add_segment(
            seg.camera,
            Segment(
                gop=seg.gop,
                seq=meta.sequence.stream,
                duration=seg.duration_s,
                discontinuity=seg.discontinuity,
                frames=len(seg.frames),
                faces=sum(1 for f in seg.frames if f.detections),
                stored_at=stored_at,
                # Live runs end by age: a server replaying old live segments at its start must
                # not list them as a current watch.
                arrived=stored_at if live else time.time(),
            ),
        )
        # WebRTC shows the annotated view: an on-demand camera's live rendition, not its recording.
        if self.whep is not None and seg.camera in self.whep.feeds and seg.rendition != "recording":
            boxes = (
                [f.to_wire() for f in sorted(seg.frames, key=lambda f: f.pts)]
                if seg.mode == "overlay"
                else None
            )
            self.whep.on_segment(seg.camera, seg.gop, bytes(seg.data), boxes)

    async def _on_dead_letter(self, msg: Msg) -> None:
        headers = msg.headers or {}
        camera, gop = headers.get(Headers.CAMERA), headers.get(Headers.GOP, "")
        if camera and CAMERA_NAME.match(camera) and gop.isdigit():
            self.index.add_gap(camera, int(gop))

    async def _segment_bytes(self, seq: int) -> bytes:
        assert self._js is not None
        raw = await bus.stored_msg(self._js, Names.OUTPUT, seq)
        return bytes(messages.decode(raw.headers, raw.data or b"", messages.SegmentMessage).data)

    async def _watch_sources(self) -> None:
        assert self._js is not None
        while True:
            await self.camera_states.refresh(self._js, self.index)
            await asyncio.sleep(1.0)

    async def _segment_sidecar(self, seq: int) -> bytes:
        assert self._js is not None
        raw = await bus.stored_msg(self._js, Names.OUTPUT, seq)
        segment = messages.decode(raw.headers, raw.data or b"", messages.SegmentMessage)
        return json.dumps(segment_metadata(segment)).encode()

    # -- HTTP side (handler threads) ---------------------------------------
    def segment(self, camera: str, gop: int, live: bool = False) -> bytes | None:
        seg = (self.live if live else self.index).segment(camera, gop)
        if seg is None:
            return None
        key = (camera, -1 - gop if live else gop)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = self._call(self._segment_bytes(seg.seq))
        with self._cache_lock:
            self._cache[key] = data
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return data

    def sidecar(self, camera: str, gop: int) -> bytes | None:
        """A segment's detections per frame (``seg_<gop>.json``), or None when not indexed."""
        seg = self.index.segment(camera, gop)
        return None if seg is None else self._call(self._segment_sidecar(seg.seq))

    def cameras(self) -> list[dict[str, Any]]:
        """``/api/cameras``: each camera's index summary (or an empty one for a camera that has
        registered but has no segment yet: its instant view plays already), output mode and
        WebRTC viewers."""
        cameras: list[dict[str, Any]] = list(self.index.summary())
        listed = {str(c["camera"]) for c in cameras}
        cameras += [registered_only(name) for name in sorted(self.registered - listed)]
        live = self.whep.stats() if self.whep is not None else {}
        for camera in cameras:
            name = str(camera["camera"])
            camera["webrtc"] = live.get(name)
            camera["output_mode"] = self.camera_states.output_modes.get(name, self.settings.output.mode)
            camera["source_state"] = self.camera_states.source_states.get(name, "")
        return cameras

    def pipeline(self) -> dict[str, Any]:
        """``/api/pipeline``: each stage's backlog and replicas."""
        assert self._js is not None
        return self._call(pipeline_status(self._js, self.replicas))

    def enrol(self, body: bytes) -> events_api.Reply:
        """``POST /api/faces/enroll``: file gallery, then ``FP_FACES`` (every replica sees it)."""
        js = self._js

        def live(name: str) -> gallery.Person | None:
            return None if js is None else self._call(gallery.kv_get(js, name))

        try:
            reply, person = events_api.enrol_person(self.settings, body, self.describe, live)
            if person is not None and js is not None:
                self._call(gallery.kv_put(js, person))
        except FramepipeError as exc:
            return events_api.Reply.text(422, str(exc))
        if person is not None:
            log.info("web.enrolled", name=person.name, photos=len(person.embeddings))
        return reply

    def whep_request(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        whep_http.respond(handler, self.whep, self._call, method, path, body)
