"""WHEP on the web server's HTTP handler threads: which request is which, and one-line answers.

The sessions themselves live in :mod:`framepipe.web.whep` on the server's event
loop; ``call`` runs a coroutine there and waits for it (``WebServer._call``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import structlog

from framepipe.web.whep import SESSION_PATH, WhepError, WhepHub

log = structlog.get_logger("framepipe.web")
WHEP_PATH = re.compile(r"^/whep/([A-Za-z0-9_-]{1,64})$")
#: runs a coroutine on the server's event loop and returns its result (timeout in seconds).
Call = Callable[[Coroutine[Any, Any, Any], float], Any]


def respond(
    handler: BaseHTTPRequestHandler, hub: WhepHub | None, call: Call, method: str, path: str, body: bytes
) -> None:
    """POST an offer to /whep/<camera>[?view=instant], DELETE /whep/session/<id>; else one line."""
    headers: dict[str, str] = {}
    try:
        if hub is None:
            raise WhepError(503, "503: the server is starting; retry")
        if method == "POST" and (match := WHEP_PATH.match(path)):
            ctype = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                raise WhepError(415, "415: send the SDP offer as Content-Type: application/sdp")
            offer = body.decode("utf-8", "replace")
            # ?view=instant: the camera's own packets as read (web/instant.py); else annotated.
            view = parse_qs(handler.path.partition("?")[2]).get("view", ["annotated"])[0]
            session_id, answer = call(hub.create(match.group(1), offer, view), 30.0)
            status, ctype, payload = 201, "application/sdp", answer.encode()
            headers["Location"] = SESSION_PATH + session_id
        elif method == "DELETE" and path.startswith(SESSION_PATH):
            if not call(hub.delete(path[len(SESSION_PATH) :]), 10.0):
                raise WhepError(404, "404: no such WHEP session (ended already?)")
            status, ctype, payload = 200, "text/plain", b"session ended\n"
        elif path.startswith("/whep/"):
            # Trickle ICE (PATCH) is not offered: the answer carries every candidate.
            headers["Allow"] = "POST" if WHEP_PATH.match(path) else "DELETE"
            raise WhepError(405, f"405: {method} is not supported here; POST an offer, DELETE a session")
        else:
            raise WhepError(404, "404: not found")
    except WhepError as exc:
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        status, ctype, payload = exc.status, "text/plain", (exc.message + "\n").encode()
        log.info("whep.refused", path=path, status=exc.status, reason=exc.message)
    except Exception as exc:  # noqa: BLE001 - a failed request must not kill the server
        log.warning("web.error", path=path, error=f"{type(exc).__name__}: {exc}"[:300])
        status, ctype, payload = 503, "text/plain", b"503: unavailable; retry\n"
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        handler.wfile.write(payload)
