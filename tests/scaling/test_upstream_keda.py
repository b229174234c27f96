"""Upstream KEDA test cases, ported to framepipe's autoscaler (the HPA's are in
``test_upstream_hpa.py``).

Each test is named after the upstream test it ports; parametrised cases carry
the upstream case name as their id where upstream names its cases:
kedacore/keda ``pkg/scalers/nats_jetstream_scaler_test.go``,
``pkg/fallback/fallback_test.go``, ``pkg/scaling/executor/scale_scaledobjects_test.go``.

Upstream fakes the NATS monitoring endpoint with canned JSON; the parsing cases
below do the same with the same payload shapes, and the clustered cases run
against a real three-node nats-server cluster on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from framepipe.core import bus
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES, STREAMS, Names, consumer_specs, stage_spec
from framepipe.local.natscluster import NatsNodes, node_name
from framepipe.scaling.autoscale import (
    Autoscaler,
    StageScaler,
)
from framepipe.scaling.jsz import JszReader, jsz_url, node_monitor_urls, parse_jsz

WIDE = ScalingSettings(
    min_replicas=1,
    max_replicas=20,
    lag_threshold=10,
    scale_up_stabilization_s=0,
    scale_down_stabilization_s=0,
    scale_up_percent=1000,
    scale_up_pods=100,
    scale_down_percent=100,
)


def _jsz(
    *consumers: dict[str, Any], stream: str = "mystream", account: str = "$G", size: int = 0
) -> dict[str, Any]:
    return {
        "meta_cluster": {"cluster_size": size},
        "account_details": [
            {
                "name": account,
                "id": account,
                "stream_detail": [{"name": stream, "consumer_detail": list(consumers)}],
            }
        ],
    }


class TestNatsJetStreamScaler:
    """kedacore/keda pkg/scalers/nats_jetstream_scaler_test.go."""

    @pytest.mark.parametrize(
        ("payload", "lag", "active"),
        [
            pytest.param(
                _jsz({"name": "pull_consumer"}), 0, False, id="All Good - no messages waiting (not active)"
            ),
            pytest.param(
                _jsz({"name": "pull_consumer", "num_pending": 100}),
                100,
                True,
                id="All Good - messages waiting (active)",
            ),
            pytest.param(
                _jsz({"name": "pull_consumer_bad", "num_pending": 100}),
                None,
                False,
                id="Fail - stream exists but configured consumer missing",
            ),
            pytest.param(
                _jsz({"name": "pull_consumer", "num_pending": 100}, stream="mystreamBad"),
                None,
                False,
                id="Fail - Non-matching stream name",
            ),
        ],
    )
    def test_nats_jetstream_is_active(self, payload: dict[str, Any], lag: int | None, active: bool) -> None:
        """TestNATSJetStreamIsActive: lag found or an error, active above activationLagThreshold 10."""
        found = parse_jsz(payload, "mystream", "pull_consumer", "$G")
        assert (None if found is None else found.lag) == lag
        assert (found is not None and found.lag > 10) == active

    def test_nats_jetstream_get_max_msg_lag(self) -> None:
        """TestNATSJetStreamGetMaxMsgLag: pending + ack-pending; a missing consumer is no lag at all,
        never the stream's last sequence."""
        payload = _jsz({"name": "pull_consumer", "num_pending": 7, "num_ack_pending": 3})
        payload["account_details"][0]["stream_detail"][0]["state"] = {"last_seq": 9999}
        found = parse_jsz(payload, "mystream", "pull_consumer")
        assert found is not None
        assert found.lag == 10
        assert parse_jsz(payload, "mystream", "some_other_consumer") is None

    def test_nats_jetstream_parse_metadata_account_by_id_or_name(self) -> None:
        """TestNATSJetStreamParseMetadata ("uses ID over name") and IsAccount: an account matches by
        id or name, and the same stream in another account is not read."""
        payload = {
            "account_details": [
                {
                    "name": "OTHER",
                    "id": "AOTHER",
                    "stream_detail": [{"name": "s", "consumer_detail": [{"name": "c", "num_pending": 50}]}],
                },
                {
                    "name": "FRAMEPIPE",
                    "id": "AFP",
                    "stream_detail": [{"name": "s", "consumer_detail": [{"name": "c", "num_pending": 3}]}],
                },
            ]
        }
        for account in ("FRAMEPIPE", "AFP"):
            found = parse_jsz(payload, "s", "c", account)
            assert found is not None
            assert found.lag == 3
        assert parse_jsz(payload, "s", "c", "NOBODY") is None

    def test_get_nats_jetstream_monitoring_url(self) -> None:
        """TestGetNATSJetStreamMonitoringURL: /jsz with acc, consumers and config."""
        url = jsz_url("http://nats.nats:8222", "$G")
        assert url.startswith("http://nats.nats:8222/jsz?")
        assert "acc=%24G" in url
        assert "consumers=true" in url
        assert "config=true" in url

    def test_nats_jetstream_node_urls_from_varz(self) -> None:
        """natsMockHTTPJetStreamServer's /varz: advertised client URLs give the node hosts (with the
        monitoring port); without them each route URL's first label is put before the endpoint's host."""
        routes = {
            "server_name": "leader",
            "cluster": {"urls": ["leader.localhost.nats.svc:8222", "not-leader-1.localhost.nats.svc:8222"]},
        }
        assert node_monitor_urls("http://localhost:8222", routes) == [
            "http://leader.localhost:8222",
            "http://not-leader-1.localhost:8222",
        ]
        advertised = {"connect_urls": ["10.0.0.5:4222", "10.0.0.6:4222"]}
        assert node_monitor_urls("http://framepipe-nats-headless.fp.svc:8222", advertised) == [
            "http://10.0.0.5:8222",
            "http://10.0.0.6:8222",
        ]


# -- a real three-node cluster (the ``nats_cluster`` fixture of tests/conftest.py) ----
async def _replicated_topology(cluster: NatsNodes) -> Any:
    settings = Settings()
    nc = await nats.connect(cluster.url.split(","))
    js = nc.jetstream(timeout=10)
    deadline = time.monotonic() + 30
    while True:  # the meta leader is elected a moment after the servers are healthy
        try:
            for spec in STREAMS:
                await js.add_stream(dataclasses.replace(bus.stream_config(spec, settings), num_replicas=3))
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    for consumer in consumer_specs():
        await js.add_consumer(consumer.stream, bus.consumer_config(consumer, settings))
    return nc, js


@pytest.fixture
async def clustered_js(nats_cluster: NatsNodes) -> AsyncIterator[Any]:
    nc, js = await _replicated_topology(nats_cluster)
    try:
        yield js
    finally:
        await nc.close()


class TestNatsJetStreamClustered:
    """kedacore/keda nats_jetstream_scaler_test.go, clustered cases, on a real 3-node cluster."""

    async def test_messages_waiting_clustered(self, nats_cluster: NatsNodes, clustered_js: Any) -> None:
        """ "All Good - messages waiting (clustered)": whichever node the endpoint reaches, the lag
        is read from the consumer's leader (5 = 3 pending + 2 unacked)."""
        for gop in range(5):
            await bus.publish(clustered_js, "video.cam1", b"gop", {}, Names.msg_id("cam1", gop, "gateway"))
        spec = stage_spec("decoder").consumer
        sub = await clustered_js.pull_subscribe_bind(spec.durable, spec.stream)
        assert len(await sub.fetch(2, timeout=5)) == 2
        nodes = tuple(nats_cluster.monitor_urls)
        for node in nats_cluster.nodes:
            reader = JszReader(node.monitor_url, nodes=nodes)
            lags = await asyncio.to_thread(reader.read, ("decoder",))
            found = lags["decoder"]
            assert found is not None
            assert (found.num_pending, found.num_ack_pending) == (3, 2)
            assert found.leader in {node_name(n) for n in nats_cluster.nodes}
            leader = nats_cluster.nodes[nats_cluster.index_of(found.leader)]
            assert reader.leaders[f"{spec.stream}/{spec.durable}"].endswith(str(leader.monitor_port))

    async def test_consumer_missing_clustered(self, nats_cluster: NatsNodes, clustered_js: Any) -> None:
        """ "Not Active - consumer missing (clustered)" and kedacore/keda #7657: one stage's missing
        consumer is an error for that stage only; the others are read, and the stage is not
        scaled to max, neither before nor after the fallback threshold."""
        inference = stage_spec("inference").consumer
        await clustered_js.delete_consumer(inference.stream, inference.durable)
        nodes = tuple(nats_cluster.monitor_urls)
        reader = JszReader(nats_cluster.monitor_url, nodes=nodes)
        lags = await asyncio.to_thread(reader.read)
        assert lags["inference"] is None
        assert all(lags[s] is not None for s in SCALED_STAGES if s != "inference")

        counts = {s: 3 if s == "inference" else 1 for s in SCALED_STAGES}
        scaling = StageScaling(**{s: dataclasses.replace(WIDE, polling_interval_s=1) for s in counts})
        now = [0.0]

        def apply(stage: str, n: int) -> None:
            counts[stage] = n

        def read_lags() -> dict[str, int | None]:
            return {s: None if lag is None else lag.lag for s, lag in reader.read().items()}

        autoscaler = Autoscaler(scaling, read_lags, counts.__getitem__, apply, clock=lambda: now[0])
        seen = []
        for tick in range(6):
            now[0] = float(tick)
            await asyncio.to_thread(autoscaler.step)
            seen.append(counts["inference"])
        assert max(seen) < WIDE.max_replicas
        assert seen[:3] == [3, 3, 3]  # held while under the failure threshold
        assert seen[-1] == WIDE.fallback_replicas  # then the fallback metric, not max


# -- KEDA fallback and executor ------------------------------------------------
class TestFallback:
    """kedacore/keda pkg/fallback/fallback_test.go."""

    def test_bump_the_number_of_failures_when_metrics_call_fails(self) -> None:
        """ "should bump the number of failures when metrics call fails": counted, nothing changes."""
        scaler = StageScaler(WIDE)
        assert scaler.decide(0, 5, None).desired == 5
        assert scaler.failures["lag"] == 1

    def test_reset_the_health_status_when_scaler_metrics_are_available(self) -> None:
        """ "should reset the health status when scaler metrics are available"."""
        scaler = StageScaler(WIDE)
        scaler.decide(0, 5, None)
        scaler.decide(10, 5, 50)
        assert scaler.failures["lag"] == 0

    def test_normalised_metric_when_failures_are_beyond_threshold(self) -> None:
        """ "should return a normalised metric when number of failures are beyond threshold":
        threshold 3, already 3 failures, fallback 10 replicas at target 10: the metric is 100,
        so the HPA moves 5 → 10."""
        scaler = StageScaler(dataclasses.replace(WIDE, fallback_failure_threshold=3, fallback_replicas=10))
        scaler.failures["lag"] = 3
        decision = scaler.decide(0, 5, None)
        assert (decision.desired, decision.fallback) == (10, True)
        assert scaler.failures["lag"] == 4

    def test_fallback_is_a_metric_through_the_hpa_behavior(self) -> None:
        """The fallback metric passes the HPA's rules: a 60 s scale-down window keeps 8 replicas
        while earlier recommendations were higher, rather than pinning 2 at once."""
        settings = dataclasses.replace(
            WIDE, fallback_failure_threshold=0, fallback_replicas=2, scale_down_stabilization_s=60
        )
        scaler = StageScaler(settings)
        assert scaler.decide(0, 8, 80).desired == 8
        assert scaler.decide(10, 8, None).desired == 8
        assert scaler.decide(61, 8, None).desired == 2


class TestScaleExecutor:
    """kedacore/keda pkg/scaling/executor/scale_scaledobjects_test.go."""

    def test_scale_to_min_replicas_when_not_active(self) -> None:
        """TestScaleToMinReplicasWhenNotActive: min 0, 10 replicas, never active: scaled to 0."""
        scaler = StageScaler(dataclasses.replace(WIDE, min_replicas=0))
        assert scaler.decide(0, 10, 0).desired == 0

    def test_scale_to_min_replicas_from_lower_initial_replica_count(self) -> None:
        """TestScaleToMinReplicasFromLowerInitialReplicaCount: min 5, 1 replica, not active: 5."""
        scaler = StageScaler(dataclasses.replace(WIDE, min_replicas=5))
        assert scaler.decide(0, 1, 0).desired == 5

    def test_scale_from_min_replicas_when_active(self) -> None:
        """TestScaleFromMinReplicasWhenActive: min 0, 0 replicas, active: one replica."""
        scaler = StageScaler(dataclasses.replace(WIDE, min_replicas=0))
        assert scaler.decide(0, 0, 50).desired == 1

    def test_no_scale_to_zero_while_a_trigger_errors_with_fallback(self) -> None:
        """RequestScale, "isError && Fallback != nil": not active and failing never scales to
        zero, or the HPA could not apply the fallback afterwards."""
        scaler = StageScaler(dataclasses.replace(WIDE, min_replicas=0, cooldown_period_s=0))
        assert scaler.decide(0, 3, None).desired == 3
