"""``GET /demand``: the running cameras' feed-forward demand, for KEDA's metrics-api triggers.

One small process (``framepipe scale demand --serve``, the ``framepipe-demand``
Deployment in a cluster) keeps one NATS connection and answers each request from
the cameras' source states at that moment (:func:`framepipe.scaling.demand.running_cameras`),
so a new camera counts from its gateway's first state save and a removed one
stops counting when its gateway stores ``stopped``.

Failure is loud, never a guess: when NATS cannot be read the answer is ``503``
with a one-line ``error``, which KEDA's metrics-api scaler counts as a failed
read: the HPA then keeps the lag trigger's proposal and blocks scale-downs, and
after ``fallback.failureThreshold`` failures KEDA feeds the fallback metric
(docs/autoscaling.md). ``/healthz`` says only that the process serves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import structlog
from nats.aio.client import Client

from framepipe.core import bus
from framepipe.core.cluster_settings import StageScaling
from framepipe.core.settings import Settings
from framepipe.scaling.demand import (
    STALE_AFTER_S,
    CameraProfiles,
    demand_document,
    expected_replicas,
    running_cameras,
)

log = structlog.get_logger("framepipe.demand")

DEMAND_PATH = "/demand"
#: a request's NATS reads must finish well inside KEDA's HTTP timeout (3 s by default).
READ_TIMEOUT_S = 2.0


class DemandServer:
    """Answers ``/demand`` and ``/healthz`` over HTTP/1.1 (one request a connection)."""

    def __init__(
        self,
        settings: Settings,
        scaling: StageScaling,
        rates: Mapping[str, float],
        *,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.settings = settings
        self.scaling = scaling
        self.rates = dict(rates)
        self.stale_after_s = stale_after_s
        self.profiles = CameraProfiles()
        self._nc: Client | None = None
        self._server: asyncio.Server | None = None

    async def document(self) -> dict[str, Any]:
        """The demand of the cameras running now; raises when NATS cannot be read."""
        if self._nc is None or self._nc.is_closed:
            self._nc = await bus.connect(self.settings, "framepipe-demand", retry_initial=False)
        js = self._nc.jetstream(timeout=READ_TIMEOUT_S)
        cameras = await asyncio.wait_for(
            running_cameras(js, stale_after_s=self.stale_after_s), READ_TIMEOUT_S
        )
        loads = self.profiles.loads(sorted(cameras), cameras)
        return demand_document(loads, expected_replicas(loads, self.rates, self.scaling))

    async def _answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path != DEMAND_PATH:
            return 404, {"error": f"no {path}: the demand is at {DEMAND_PATH}"}
        try:
            # The connect too: a NATS that accepts and then hangs must not outlast KEDA's timeout.
            return 200, await asyncio.wait_for(self.document(), 2 * READ_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failed read is KEDA's failed read
            reason = str(exc) or type(exc).__name__
            log.warning(
                "demand.unavailable",
                error=reason,
                what_to_do="check that NATS runs and FP_SOURCES exists (framepipe setup)",
            )
            return 503, {"error": f"cannot read the cameras' source states: {reason}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body = 405, {"error": f"{method} is not served: use GET"}
            else:
                status, body = await self._answer(path)
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
            writer.write(
                f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # a client that sent no complete request gets no answer
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (``port=0`` picks a free one)."""
        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("demand.serving", url=f"http://{host}:{bound}{DEMAND_PATH}", rates=self.rates)
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
