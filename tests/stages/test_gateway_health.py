"""The gateway's /healthz and /readyz (what a pod's probes read), against a real NATS."""

from __future__ import annotations

import asyncio
import urllib.request
from urllib.error import HTTPError, URLError

import pytest
from nats.js import JetStreamContext

from framepipe.core.settings import Settings
from framepipe.stages.gateway import Gateway
from tests.helpers import faces_clip


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


class TestGatewayHealth:
    """Gateway health endpoints: off by default, live and ready while it publishes."""

    def test_off_by_default(self) -> None:
        """A local run's gateways open no port unless asked (metrics_port -1)."""
        assert Settings().gateway.metrics_port == -1

    async def test_live_and_ready_while_publishing(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """/healthz 200; /readyz 200 with `nats: ok` once connected; the server closes at the end."""
        settings = nats_settings.replace(gateway={"metrics_port": 0})
        gateway = Gateway(settings, "probed", str(faces_clip()), pacing="realtime")
        running = asyncio.create_task(gateway.run())
        try:
            deadline = asyncio.get_running_loop().time() + 30.0
            while gateway.published == 0:
                assert not running.done(), "the gateway ended before publishing"
                assert asyncio.get_running_loop().time() < deadline, "no GOP published"
                await asyncio.sleep(0.1)
            port = gateway.health.port
            assert port is not None
            assert await asyncio.to_thread(_get, port, "/healthz") == (200, "ok")
            status, text = await asyncio.to_thread(_get, port, "/readyz")
            assert status == 200, text
            assert "nats: ok" in text
        finally:
            gateway.stop()
            await asyncio.wait_for(running, 30.0)
        with pytest.raises(URLError):  # closed with the gateway: nothing left listening
            await asyncio.to_thread(_get, port, "/healthz")
