"""GET routes: the console's static files and the contract, the JSON API, and HLS.

``/<camera>/index.m3u8``, ``/<camera>/seg_<gop>.ts`` and its detections per frame
``/<camera>/seg_<gop>.json`` (drawn by the console over overlay-mode video), and an on-demand
camera's annotated live view ``/<camera>/live.m3u8`` + ``live_<gop>.ts`` (burn-in while it is
requested: :mod:`framepipe.web.presence`). ``/`` is the console (a static page; hls.js is
vendored at build time by ``make web-assets``), ``/api/cameras`` and ``/api/pipeline`` feed
it. ``/asyncapi.json`` and ``/schemas/<stream>.schema.json`` are the contract applications
code against (:mod:`framepipe.core.asyncapi`). Beside these, the handler sends
``/whep/<camera>`` (``?view=instant``: the camera's own packets, :mod:`framepipe.web.instant`)
to the WebRTC live view, and ``/api/events/<camera>`` and ``POST /api/faces/enroll`` to
:mod:`framepipe.web.events_api`; every path but ``/healthz`` follows the token rules of
:mod:`framepipe.web.auth` (``?token=``, which also sets a cookie, or ``Authorization: Bearer``;
401 otherwise).

Each ``*_route`` answers ``(status, content type, body)`` for the paths it knows and None for
the others; :func:`route` tries them in turn. They read the server's indexes and call into its
event loop for anything NATS holds (segment bytes, consumer state).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

from framepipe.core import asyncapi
from framepipe.core.settings import Settings
from framepipe.web import events_api
from framepipe.web.index import LiveIndex, OutputIndex
from framepipe.web.presence import ViewerPresence


class WebServer(Protocol):
    """What the routes read of the server (:class:`framepipe.web.server.WebServer`)."""

    settings: Settings
    index: OutputIndex
    live: LiveIndex
    presence: ViewerPresence

    @property
    def registered(self) -> set[str]: ...

    def segment(self, camera: str, gop: int, live: bool = False) -> bytes | None: ...
    def sidecar(self, camera: str, gop: int) -> bytes | None: ...
    def cameras(self) -> list[dict[str, Any]]: ...
    def pipeline(self) -> dict[str, Any]: ...


Reply = tuple[int, str, bytes]
STATIC = Path(__file__).with_name("static")
HLS_JS = STATIC / "vendor" / "hls.min.js"
#: docs/asyncapi.json and docs/schemas/*, rendered by this build (the same bytes as the docs).
CONTRACT_FILES: dict[str, bytes] = {rel: text.encode() for rel, text in asyncapi.rendered_files().items()}
CONSOLE_SCRIPTS = ("/console.js", "/whep.js", "/live_boxes.js", "/overlay.js", "/events.js")
SEGMENT_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/seg_(\d{1,12})\.ts$")
SIDECAR_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/seg_(\d{1,12})\.json$")
PLAYLIST_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/index\.m3u8$")
#: an on-demand camera's annotated live view (burn-in while watched; requests keep it watched).
LIVE_PLAYLIST_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/live\.m3u8$")
LIVE_SEGMENT_PATH = re.compile(r"^/([A-Za-z0-9_-]{1,64})/live_(\d{1,12})\.ts$")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
NO_CAMERA: Reply = (404, "text/plain", b"no such camera (yet)")
NO_SEGMENT: Reply = (404, "text/plain", b"no such segment")


def route(server: WebServer, path: str) -> Reply:
    for answer in (console_route, api_route, hls_route):
        if (reply := answer(server, path)) is not None:
            return reply
    return 404, "text/plain", b"not found"


def console_route(server: WebServer, path: str) -> Reply | None:
    if path in ("/", "/index.html"):
        return 200, CONTENT_TYPES[".html"], (STATIC / "index.html").read_bytes()
    if path in CONSOLE_SCRIPTS:
        return 200, CONTENT_TYPES[".js"], (STATIC / path[1:]).read_bytes()
    if path == "/vendor/hls.min.js":
        if not HLS_JS.is_file():
            return 404, "text/plain", b"hls.js is not vendored: run `make web-assets`"
        return 200, CONTENT_TYPES[".js"], HLS_JS.read_bytes()
    if path == "/healthz":
        return 200, "text/plain", b"ok"
    if (contract := CONTRACT_FILES.get(path.lstrip("/"))) is not None:
        return 200, "application/json", contract
    return None


def api_route(server: WebServer, path: str) -> Reply | None:
    if path == "/api/cameras":
        return 200, "application/json", json.dumps(server.cameras()).encode()
    if match := events_api.EVENTS_PATH.match(path):
        reply = events_api.timeline(server.settings, match.group(1))
        return reply.status, reply.content_type, reply.body
    if match := events_api.SNAPSHOT_PATH.match(path):
        reply = events_api.snapshot(server.settings, match.group(1), match.group(2))
        return reply.status, reply.content_type, reply.body
    if path == "/api/pipeline":
        return 200, "application/json", json.dumps(server.pipeline()).encode()
    return None


def hls_route(server: WebServer, path: str) -> Reply | None:
    if match := PLAYLIST_PATH.match(path):
        playlist = server.index.playlist(match.group(1))
        if playlist is None:
            return NO_CAMERA
        return 200, "application/vnd.apple.mpegurl", playlist.encode()
    if match := LIVE_PLAYLIST_PATH.match(path):
        watched = match.group(1)
        live = server.live.playlist(watched)
        if live is None and watched not in server.registered and watched not in server.index.cameras():
            return NO_CAMERA
        server.presence.touch(watched)
        return 200, "application/vnd.apple.mpegurl", (live or server.live.empty_playlist()).encode()
    if match := LIVE_SEGMENT_PATH.match(path):
        server.presence.touch(match.group(1))
        data = server.segment(match.group(1), int(match.group(2)), live=True)
        return NO_SEGMENT if data is None else (200, "video/mp2t", data)
    if match := SIDECAR_PATH.match(path):
        sidecar = server.sidecar(match.group(1), int(match.group(2)))
        return NO_SEGMENT if sidecar is None else (200, "application/json", sidecar)
    if match := SEGMENT_PATH.match(path):
        data = server.segment(match.group(1), int(match.group(2)))
        return NO_SEGMENT if data is None else (200, "video/mp2t", data)
    return None
