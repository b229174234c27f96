"""Prometheus metrics and the /healthz, /readyz, /metrics endpoint of a stage."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES = Counter("framepipe_messages_total", "Input messages handled, by outcome", ["stage", "outcome"])
PROCESS_SECONDS = Histogram(
    "framepipe_process_seconds",
    "Time to process one input message",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
DEAD_LETTERS = Counter("framepipe_dead_letters_total", "Messages routed to the DLQ", ["stage", "reason"])
IN_FLIGHT = Gauge("framepipe_in_flight", "Messages held (fetched, not yet acked)", ["stage"])
FRAMES = Counter("framepipe_frames_total", "Frames handled", ["stage"])


class Health:
    """Liveness/readiness flags served over HTTP next to the metrics."""

    def __init__(self) -> None:
        self.live = True
        self.ready = False
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    ok = health.live
                    body, status, ctype = (b"ok" if ok else b"dead"), 200 if ok else 503, "text/plain"
                elif self.path == "/readyz":
                    ok = health.ready
                    body, status, ctype = (b"ready" if ok else b"not ready"), 200 if ok else 503, "text/plain"
                else:
                    body, status, ctype = b"not found", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="health").start()
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
