"""HTTP server: HLS from the OUTPUT stream, the web console and its JSON API.

``/<camera>/index.m3u8``, ``/<camera>/seg_<gop>.ts`` and its detections per frame
``/<camera>/seg_<gop>.json`` (drawn by the console over overlay-mode video), and an on-demand
camera's annotated live view ``/<camera>/live.m3u8`` + ``live_<gop>.ts`` (burn-in while it is
requested: :mod:`framepipe.web.presence`) are served from
JetStream (an ordered consumer keeps the index, a direct get fetches a
segment's bytes), so any number of encoder replicas on any machines feed one
server with no shared filesystem. ``/`` is the console (a static page; hls.js
is vendored at build time by ``make web-assets``), ``/api/cameras`` and
``/api/pipeline`` feed it. Binds 127.0.0.1 unless told otherwise; bound to
any other address (or with ``web.require_token = "always"``) every path but
``/healthz`` needs a token (``web.token``, else generated and printed once as
the URL to open): ``?token=`` (which also sets a cookie, so the console's and
hls.js's own requests carry it), or ``Authorization: Bearer``; 401 otherwise.
``/asyncapi.json`` and ``/schemas/<stream>.schema.json`` are the contract
applications code against (:mod:`framepipe.core.asyncapi`).
``/whep/<camera>`` is the WebRTC live view (``web/whep.py``; ``?view=instant``: the camera's own
packets as read, ``web/instant.py``), under the same token rules.
``/api/events/<camera>`` (the events timeline, snapshots) and ``POST /api/faces/enroll``
(a person from a track's snapshot) are :mod:`framepipe.web.events_api`, same token rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from framepipe.core import asyncapi, bus, gallery, messages, topology
from framepipe.core.errors import FramepipeError, SchemaError, UnreachableError
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings, WebSettings
from framepipe.core.sources import read_source_state
from framepipe.core.topology import CAMERA_NAME, Names
from framepipe.media.overlay import segment_metadata
from framepipe.web import events_api, whep_http
from framepipe.web.index import LiveIndex, OutputIndex, Segment
from framepipe.web.instant import InstantFeed
from framepipe.web.presence import ViewerPresence
from framepipe.web.whep import WhepHub
from framepipe.web.whep_feed import CameraFeed

#: how long shutdown waits for the NATS side to close before cancelling what is left.
SHUTDOWN_STEP_S = 6.0
log = structlog.get_logger("framepipe.web")
STATIC = Path(__file__).with_name("static")
HLS_JS = STATIC / "vendor" / "hls.min.js"
#: docs/asyncapi.json and docs/schemas/*, rendered by this build (the same bytes as the docs).
CONTRACT_FILES: dict[str, bytes] = {rel: text.encode() for rel, text in asyncapi.rendered_files().items()}
SEGMENT_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/seg_(\d{1,12})\.ts$")
SIDECAR_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/seg_(\d{1,12})\.json$")
PLAYLIST_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/index\.m3u8$")
#: an on-demand camera's annotated live view (burn-in while watched; requests keep it watched).
LIVE_PLAYLIST_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/live\.m3u8$")
LIVE_SEGMENT_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/live_(\d{1,12})\.ts$")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
T = TypeVar("T")
TOKEN_COOKIE = "framepipe_token"
UNAUTHORIZED = (
    b"401: this server needs its token: open the URL `framepipe web` printed (.../?token=...), "
    b"or send `Authorization: Bearer <token>`\n"
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address is exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(web: WebSettings, host: str) -> str | None:
    """The token requests must carry, or None when none is needed (loopback, ``auto``)."""
    if web.require_token == "auto" and is_loopback(host):
        return None
    return web.token or secrets.token_urlsafe(24)


def presented_token(path: str, headers: Any) -> tuple[str, bool]:
    """The token a request carries, and whether it came in the query string."""
    query = parse_qs(path.partition("?")[2]).get("token")
    if query:
        return query[0], True
    scheme, _, value = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip(), False
    cookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        cookie.load(str(headers.get("Cookie", "")))
    morsel = cookie.get(TOKEN_COOKIE)
    return (morsel.value if morsel else ""), False


#: live replicas per stage, from whatever runs the stages (the local supervisor's runtime
#: file, a cluster's API); the server itself knows no runtime.
ReplicaCount = Callable[[], dict[str, int]]


def _no_replicas() -> dict[str, int]:
    return {}


class WebServer:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8090,
        window: int = 6,
        replicas: ReplicaCount = _no_replicas,
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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

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
        self._http = ThreadingHTTPServer((self.host, self.port), self._handler())
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
        self._presence_task = asyncio.ensure_future(self.presence.follow(lambda: list(whep.feeds)))

    async def _instant_feed(self, camera: str) -> InstantFeed:
        """The camera's packets from live.<camera> and boxes from dets.<camera> (core NATS)."""
        assert self._nc is not None
        feed = InstantFeed(camera)
        await feed.start(self._nc)
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

    async def _watch_sources(self) -> None:
        while True:
            for camera in self.index.cameras():
                with contextlib.suppress(Exception):
                    assert self._js is not None
                    state = await read_source_state(self._js, camera)
                    if state is not None:
                        ended = state.next_gop if state.state == "ended" else None
                        self.index.set_source(camera, state.first_gop, ended)
            await asyncio.sleep(1.0)

    async def _segment_bytes(self, seq: int) -> bytes:
        assert self._js is not None
        raw = await self._js.get_msg(Names.OUTPUT, seq)
        return bytes(messages.decode(raw.headers, raw.data or b"", messages.SegmentMessage).data)

    async def _segment_sidecar(self, seq: int) -> bytes:
        assert self._js is not None
        raw = await self._js.get_msg(Names.OUTPUT, seq)
        segment = messages.decode(raw.headers, raw.data or b"", messages.SegmentMessage)
        return json.dumps(segment_metadata(segment)).encode()

    async def _pipeline(self) -> dict[str, Any]:
        assert self._js is not None
        stages: dict[str, dict[str, int]] = {}
        replicas = self.replicas()
        for spec in topology.consumer_specs():
            try:
                info = await self._js.consumer_info(spec.stream, spec.durable)
            except Exception:  # noqa: BLE001 - a missing consumer shows as absent
                continue
            lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
            stages[spec.durable] = {
                "lag": lag,
                "pending": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "waiting": info.num_waiting or 0,
                "replicas": replicas.get(spec.stage, 0),
            }
        return {"time": time.time(), "stages": stages}

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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def refuse_unauthorized(self, path: str) -> bool:
                token, _ = presented_token(self.path, self.headers)
                if path == "/healthz" or server.authorized(token):
                    return False
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="framepipe"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(UNAUTHORIZED)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(UNAUTHORIZED)
                return True

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                if not self.refuse_unauthorized(path):
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(min(length, 256 * 1024))
                    if path == events_api.ENROLL_PATH:
                        self.reply(server.enrol(body))
                    else:
                        server.whep_request(self, "POST", path, body)

            def reply(self, reply: events_api.Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(reply.body)

            def do_DELETE(self) -> None:
                path = self.path.split("?", 1)[0]
                if not self.refuse_unauthorized(path):
                    server.whep_request(self, "DELETE", path, b"")

            def do_PATCH(self) -> None:
                path = self.path.split("?", 1)[0]
                if not self.refuse_unauthorized(path):
                    server.whep_request(self, "PATCH", path, b"")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                _, in_query = presented_token(self.path, self.headers)
                if self.refuse_unauthorized(path):
                    return
                try:
                    status, ctype, body = server.route(path)
                except Exception as exc:  # noqa: BLE001 - a failed request must not kill the server
                    log.warning("web.error", path=path, error=f"{type(exc).__name__}: {exc}"[:300])
                    status, ctype, body = 503, "text/plain", b"unavailable"
                if server.token and in_query and status == 200 and path.endswith(".m3u8"):
                    # Players that know no cookies (ffplay, VLC) fetch segments with the token too.
                    body = _tokenize_playlist(body, server.token)
                self.send_response(status)
                if server.token and in_query:
                    # The console's and hls.js's relative requests then carry it without the query.
                    self.send_header(
                        "Set-Cookie", f"{TOKEN_COOKIE}={server.token}; Path=/; HttpOnly; SameSite=Strict"
                    )
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache" if not path.endswith(".ts") else "max-age=3600")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    def route(self, path: str) -> tuple[int, str, bytes]:
        if path in ("/", "/index.html"):
            return 200, CONTENT_TYPES[".html"], (STATIC / "index.html").read_bytes()
        if path in ("/console.js", "/whep.js", "/live_boxes.js", "/overlay.js", "/events.js"):
            return 200, CONTENT_TYPES[".js"], (STATIC / path[1:]).read_bytes()
        if path == "/vendor/hls.min.js":
            if not HLS_JS.is_file():
                return 404, "text/plain", b"hls.js is not vendored: run `make web-assets`"
            return 200, CONTENT_TYPES[".js"], HLS_JS.read_bytes()
        if path == "/healthz":
            return 200, "text/plain", b"ok"
        if (contract := CONTRACT_FILES.get(path.lstrip("/"))) is not None:
            return 200, "application/json", contract
        if path == "/api/cameras":
            cameras = self.index.summary()
            live = self.whep.stats() if self.whep is not None else {}
            for camera in cameras:
                camera["webrtc"] = live.get(str(camera["camera"]))
            return 200, "application/json", json.dumps(cameras).encode()
        if match := events_api.EVENTS_PATH.match(path):
            reply = events_api.timeline(self.settings, match.group(1))
            return reply.status, reply.content_type, reply.body
        if match := events_api.SNAPSHOT_PATH.match(path):
            reply = events_api.snapshot(self.settings, match.group(1), match.group(2))
            return reply.status, reply.content_type, reply.body
        if path == "/api/pipeline":
            return 200, "application/json", json.dumps(self._call(self._pipeline())).encode()
        if match := PLAYLIST_PATH.match(path):
            playlist = self.index.playlist(match.group(1))
            if playlist is None:
                return 404, "text/plain", b"no such camera (yet)"
            return 200, "application/vnd.apple.mpegurl", playlist.encode()
        if match := LIVE_PLAYLIST_PATH.match(path):
            watched = match.group(1)
            playlist = self.live.playlist(watched)
            if playlist is None and watched not in self.index.cameras():
                return 404, "text/plain", b"no such camera (yet)"
            self.presence.touch(watched)
            return 200, "application/vnd.apple.mpegurl", (playlist or self.live.empty_playlist()).encode()
        if match := LIVE_SEGMENT_PATH.match(path):
            self.presence.touch(match.group(1))
            data = self.segment(match.group(1), int(match.group(2)), live=True)
            if data is None:
                return 404, "text/plain", b"no such segment"
            return 200, "video/mp2t", data
        if match := SIDECAR_PATH.match(path):
            seg = self.index.segment(match.group(1), int(match.group(2)))
            if seg is None:
                return 404, "text/plain", b"no such segment"
            return 200, "application/json", self._call(self._segment_sidecar(seg.seq))
        if match := SEGMENT_PATH.match(path):
            data = self.segment(match.group(1), int(match.group(2)))
            if data is None:
                return 404, "text/plain", b"no such segment"
            return 200, "video/mp2t", data
        return 404, "text/plain", b"not found"

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


def _tokenize_playlist(body: bytes, token: str) -> bytes:
    lines = body.decode().split("\n")
    tagged = (f"{line}?token={token}" if line and not line.startswith("#") else line for line in lines)
    return "\n".join(tagged).encode()


#: a local system whose NATS has been unreachable this long is gone (a crashed nats-server
#: is restarted by the supervisor within a few seconds).
SYSTEM_GONE_S = 15.0


def system_gone(server: WebServer, runtime_file: Path, gone_since: float | None) -> tuple[str, float | None]:
    """Why the local system this server shows is gone ("" while it is not), and since when
    NATS has been unreachable (None while connected)."""
    if server.nats_connected:
        return "", None
    gone_since = gone_since if gone_since is not None else time.monotonic()
    if not runtime_file.is_file():
        return "it was stopped", gone_since
    if time.monotonic() - gone_since >= SYSTEM_GONE_S:
        return f"its NATS has not answered for {SYSTEM_GONE_S:.0f} s", gone_since
    return "", gone_since


def serve(
    settings: Settings,
    host: str,
    port: int,
    window: int,
    replicas: ReplicaCount = _no_replicas,
    describe: events_api.Describe | None = None,
    runtime_file: Path | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (the ``framepipe web`` process).

    Serving a local system (``runtime_file`` exists, now or later), it ends once that system
    is gone: the console shows live segments from the system's NATS, so without it there is
    nothing to serve (the recordings stay on disk). UnreachableError says so in one line
    (exit 3). In a cluster (no runtime file) it rides out NATS outages instead.
    """
    import signal

    server = WebServer(
        settings, host=host, port=port, window=window, replicas=replicas, describe=describe
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Printed once, to the terminal only: the token is never logged.
    print(f"console: {server.open_url}", flush=True)
    attached, gone_since, why = False, None, ""
    while not stop.wait(1.0):
        if runtime_file is None:
            continue
        attached = attached or runtime_file.is_file()
        if attached:
            why, gone_since = system_gone(server, runtime_file, gone_since)
            if why:
                break
    server.stop()
    if why:
        log.info("web.system_gone", why=why)
        raise UnreachableError(
            f"the framepipe system at {settings.nats.url} is gone ({why}): the console has nothing "
            f"left to serve; start `framepipe run` again, then `framepipe web` (recordings stay in "
            f"{settings.sink.output_dir})"
        )
