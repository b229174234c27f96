"""The cluster's demand endpoint (``framepipe scale demand --serve``) against a real nats-server
with real source states in FP_SOURCES, read over HTTP as KEDA's metrics-api scaler reads it."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any

from nats.js import JetStreamContext
from structlog.testing import capture_logs

from framepipe.cluster.keda import scaled_object
from framepipe.core.loader import cluster_config_from_tables
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.local.natsserver import free_port
from framepipe.scaling.demand import CameraProfiles, configured_rates, expected_replicas
from framepipe.scaling.demand_server import DemandServer

#: the encoder carries 1.6 GOPs/s a replica, planned at 80 %: a target of 1.28 GOPs/s.
CLUSTER = cluster_config_from_tables(
    None, {"encoder": {"gops_per_replica": 1.6, "feed_forward_utilization": 0.8}}
)


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _keda_value(document: dict[str, Any], location: str) -> float:
    """What metrics-api takes from the answer: the GJSON path of ``valueLocation`` (dotted)."""
    value: Any = document
    for key in location.split("."):
        value = value[key]
    return float(value)


async def _put_state(js: JetStreamContext, state: SourceState) -> None:
    kv = await js.key_value(Names.SOURCES_BUCKET)
    await kv.put(state.camera, state.to_json())


class TestDemandEndpoint:
    async def test_keda_reads_the_running_cameras_measured_rates(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """Running cameras count at their measured GOPs/s (an unmeasured one at 1); stopped,
        ended and stale ones do not; the rendered trigger's target turns the figure into the
        replicas the local supervisor's rule gives, and a removed camera stops counting."""
        now = time.time()
        for camera, state, rate, age in (
            ("lobby", "running", 1.0, 1.0),
            ("dock", "running", 0.25, 3.0),
            ("new", "running", 0.0, 0.5),  # its gateway has cut no GOP yet: 1 GOP/s
            ("removed", "stopped", 2.0, 1.0),
            ("file", "ended", 1.0, 1.0),
            ("lost", "reconnecting", 1.0, 1.0),
            ("killed", "running", 3.0, 600.0),  # no save for 10 minutes: its gateway died
        ):
            await _put_state(
                js,
                SourceState(
                    camera, f"rtsp://cam/{camera}", state=state, gops_per_s=rate, updated_at=now - age
                ),
            )
        rates = configured_rates(CLUSTER.scaling)
        server = DemandServer(nats_settings, CLUSTER.scaling, rates)
        port = await server.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        try:
            status, document = await asyncio.to_thread(_get, f"{base}/demand")
            assert status == 200
            assert document["cameras"] == 3
            assert document["gops_per_s"] == 2.25

            (trigger,) = [
                t
                for t in scaled_object(nats_settings, CLUSTER, "encoder")["spec"]["triggers"]
                if t["name"] == "demand"
            ]
            assert trigger["type"] == "metrics-api"
            meta = trigger["metadata"]
            value = _keda_value(document, meta["valueLocation"])
            hpa_replicas = math.ceil(value / float(meta["targetValue"]))  # AverageValue at 1 replica
            loads = CameraProfiles().loads(["lobby", "dock", "new"], {"lobby": 1.0, "dock": 0.25})
            local = expected_replicas(loads, rates, CLUSTER.scaling)["encoder"]
            assert local == document["stages"]["encoder"]["replicas"] == round(2.25 / 1.28, 3)
            assert hpa_replicas == math.ceil(local) == document["stages"]["encoder"]["ceil"] == 2
            assert value > float(meta["activationTargetValue"])  # active: wakes a stage at zero

            # The camera is removed: its gateway stores "stopped" as it exits.
            await _put_state(
                js,
                SourceState(
                    "lobby", "rtsp://cam/lobby", state="stopped", gops_per_s=1.0, updated_at=time.time()
                ),
            )
            status, document = await asyncio.to_thread(_get, f"{base}/demand")
            assert (status, document["cameras"], document["gops_per_s"]) == (200, 2, 1.25)
            assert math.ceil(document["gops_per_s"] / float(meta["targetValue"])) == 1

            assert await asyncio.to_thread(_get, f"{base}/healthz") == (200, {"status": "ok"})
            status, body = await asyncio.to_thread(_get, f"{base}/metrics")
            assert status == 404
            assert "/demand" in body["error"]
        finally:
            await server.close()

    async def test_unreadable_nats_is_a_failed_read_not_a_zero(self) -> None:
        """Without NATS the answer is 503 with one error line (KEDA counts a failed read and
        falls back), never a demand of 0 that would let the stages scale down."""
        settings = Settings().replace(nats={"url": f"nats://127.0.0.1:{free_port()}"})
        server = DemandServer(settings, CLUSTER.scaling, configured_rates(CLUSTER.scaling))
        port = await server.start("127.0.0.1", 0)
        try:
            with capture_logs() as logs:
                status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/demand")
        finally:
            await server.close()
        assert status == 503
        assert body["error"].startswith("cannot read the cameras' source states")
        assert "\n" not in body["error"]
        (line,) = [entry for entry in logs if entry["event"] == "demand.unavailable"]
        assert line["what_to_do"]
