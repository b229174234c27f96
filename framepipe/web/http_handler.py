"""The HTTP request handler: token check, then GET to :mod:`framepipe.web.routes`, POST to
enrolment or WHEP, DELETE/PATCH to WHEP; a failed GET answers 503 and the server carries on."""

from __future__ import annotations

import contextlib
from http.server import BaseHTTPRequestHandler
from typing import Protocol

import structlog

from framepipe.web import events_api, routes
from framepipe.web.auth import TOKEN_COOKIE, UNAUTHORIZED, presented_token, tokenize_playlist


class WebServer(routes.WebServer, Protocol):
    """What the handler uses of the server, beyond the routes' reads."""

    token: str | None

    def authorized(self, token: str) -> bool: ...
    def enrol(self, body: bytes) -> events_api.Reply: ...
    def whep_request(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None: ...


log = structlog.get_logger("framepipe.web")


def make_handler(server: WebServer) -> type[BaseHTTPRequestHandler]:

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
                status, ctype, body = routes.route(server, path)
            except Exception as exc:  # noqa: BLE001 - a failed request must not kill the server
                log.warning("web.error", path=path, error=f"{type(exc).__name__}: {exc}"[:300])
                status, ctype, body = 503, "text/plain", b"unavailable"
            if server.token and in_query and status == 200 and path.endswith(".m3u8"):
                # Players that know no cookies (ffplay, VLC) fetch segments with the token too.
                body = tokenize_playlist(body, server.token)
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
