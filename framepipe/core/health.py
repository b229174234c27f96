"""Prometheus metrics and the /healthz, /readyz, /metrics endpoint of a stage."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
DLQ_MESSAGES = Gauge("framepipe_dlq_messages", "Dead letters in the DLQ stream, by stage", ["stage"])
DLQ_OLDEST_AGE = Gauge(
    "framepipe_dlq_oldest_age_seconds", "Age of each stage's oldest dead letter (0: none)", ["stage"]
)
DLQ_BYTES = Gauge("framepipe_dlq_bytes", "Bytes the DLQ stream holds")
DLQ_LIMIT_BYTES = Gauge("framepipe_dlq_limit_bytes", "The DLQ stream's max_bytes (oldest letters go past it)")
IN_FLIGHT = Gauge("framepipe_in_flight", "Messages held (fetched, not yet acked)", ["stage"])
FRAMES = Counter("framepipe_frames_total", "Frames handled", ["stage"])
GOPS = Counter("framepipe_gops_total", "GOPs a stage finished (its last part, for split GOPs)", ["stage"])
BATCH_SIZE = Histogram(
    "framepipe_batch_size",
    "Messages per fetch (fetch) or frames per model call (model)",
    ["stage", "kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
ERRORS = Counter("framepipe_errors_total", "Failed attempts, by error kind", ["stage", "kind"])
BACKEND = Gauge("framepipe_backend_info", "Backend/codec in use (value 1)", ["stage", "backend"])
CAMERA_FRAMES = Counter("framepipe_camera_frames_total", "Frames handled, by camera", ["stage", "camera"])
PUBLISHED = Counter(
    "framepipe_published_total", "Messages a stage published, by stream and kind", ["stage", "stream", "kind"]
)
BACKLOG_MESSAGES = Gauge(
    "framepipe_backlog_messages",
    "A consumer's num_pending + num_ack_pending, as JetStream reports it (core/backlog.py)",
    ["stage", "stream", "consumer"],
)
BACKLOG_AGE = Gauge(
    "framepipe_backlog_age_seconds",
    "Age of the consumer's oldest unacknowledged message, 0 when none (core/backlog.py)",
    ["stage", "stream", "consumer"],
)
CAMERA_STATE = Gauge(
    "framepipe_camera_state", "The camera's source state (1 for the current one)", ["camera", "state"]
)
CAMERA_UPDATED = Gauge(
    "framepipe_camera_updated_timestamp_seconds",
    "When the gateway last stored the camera's state (it does on every GOP), Unix time",
    ["camera"],
)
CAMERA_NEXT_GOP = Gauge("framepipe_camera_next_gop", "GOPs the gateway has published so far", ["camera"])
GATEWAY_DROPPED_GOPS = Counter(
    "framepipe_gateway_dropped_gops_total", "Live GOPs the gateway dropped, by reason", ["camera", "reason"]
)
INFERENCE_BACKEND = Gauge(
    "framepipe_inference_backend_info",
    "The model and what runs it (value 1)",
    ["stage", "backend", "device", "precision", "model"],
)


def set_backend(stage: str, backend: str) -> None:
    """Mark ``backend`` as the one in use (e.g. onnxruntime-cpu, tensorrt, h264_nvenc)."""
    BACKEND.labels(stage, backend).set(1)


def set_inference_backend(stage: str, backend: str, device: str, precision: str, model: str) -> None:
    """Mark the inference backend in use, e.g. (onnxruntime, cpu, fp32, blazeface-full)."""
    INFERENCE_BACKEND.labels(stage, backend, device, precision, model).set(1)


class Health:
    """Liveness/readiness flags served over HTTP next to the metrics."""

    def __init__(self) -> None:
        self.live = True
        self.ready = False
        self._server: ThreadingHTTPServer | None = None
        self._checks: dict[str, Callable[[], bool]] = {}

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        """A readiness condition besides ``ready`` (e.g. "nats": connected)."""
        self._checks[name] = check

    def readiness(self) -> tuple[bool, str]:
        results = {"started": self.ready}
        for name, check in self._checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # noqa: BLE001 - a failing check means not ready
                results[name] = False
        text = "\n".join(f"{name}: {'ok' if ok else 'no'}" for name, ok in results.items())
        return all(results.values()), text + "\n"

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    ok = health.live
                    body, status, ctype = (b"ok" if ok else b"dead"), 200 if ok else 503, "text/plain"
                elif self.path == "/readyz":
                    ok, text = health.readiness()
                    body, status, ctype = text.encode(), 200 if ok else 503, "text/plain"
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
