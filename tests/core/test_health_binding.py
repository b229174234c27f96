"""Local stage processes listen on loopback only; pods on every interface."""

from __future__ import annotations

import socket

from framepipe.core.health import Health
from framepipe.core.settings import Settings
from framepipe.core.topology import consumer_stages


def _outward_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else str(address)


class TestHealthBinding:
    def test_every_stage_defaults_to_loopback(self) -> None:
        """No stage's health/metrics server listens beyond 127.0.0.1 unless told."""
        settings = Settings()
        assert {settings.consumer(spec.name).metrics_host for spec in consumer_stages()} == {"127.0.0.1"}

    def test_default_server_is_bound_to_loopback(self) -> None:
        """The server a stage starts with the defaults is bound to 127.0.0.1 (it was 0.0.0.0)."""
        health = Health()
        port = health.serve(0, Settings().decoder.metrics_host)
        try:
            assert health._server is not None
            assert health._server.server_address[0] == "127.0.0.1"
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            outward = _outward_address()
            if outward is not None:
                with socket.socket() as other:
                    other.settimeout(2)
                    assert other.connect_ex((outward, port)) != 0
        finally:
            health.close()
