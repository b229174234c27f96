"""Replica, cluster and DLQ-limit settings, and what they turn into (no server needed)."""

from __future__ import annotations

import pytest
from nats.js import api as js_api

from framepipe.cluster.nats import nats_conf
from framepipe.core import bus
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.errors import ConfigError
from framepipe.core.settings import LocalSettings, Settings, StreamSettings
from framepipe.core.topology import STREAMS, Names
from framepipe.local.natscluster import stream_placement


class TestReplicaSettings:
    def test_replicas_0_means_one_per_node_up_to_3(self) -> None:
        """streams.replicas = 0 resolves to 1 on one server and 3 on three or five."""
        auto = StreamSettings()
        assert (auto.replicas_for(1), auto.replicas_for(3), auto.replicas_for(5)) == (1, 3, 3)
        assert StreamSettings(replicas=2).replicas_for(3) == 2

    def test_more_replicas_than_servers_is_one_line_naming_the_settings(self) -> None:
        """R3 on a single server is refused, naming local.nats_cluster."""
        with pytest.raises(ConfigError, match=r"local\.nats_cluster"):
            StreamSettings(replicas=3).replicas_for(1)
        with pytest.raises(ConfigError, match=r"streams\.replicas"):
            StreamSettings(replicas=7)

    def test_nats_cluster_is_1_or_3(self) -> None:
        """A 2-node cluster has no fault-tolerant quorum: refused at load."""
        with pytest.raises(ConfigError, match=r"local\.nats_cluster"):
            LocalSettings(nats_cluster=2)


class TestStreamConfig:
    def test_dlq_is_bounded_by_bytes_messages_and_age(self) -> None:
        """The DLQ's config carries dlq_max_bytes, dlq_max_msgs and dlq_max_age_s, oldest dropped."""
        settings = Settings().replace(streams={"dlq_max_bytes": 1000, "dlq_max_msgs": 7})
        dlq = next(spec for spec in STREAMS if spec.name == Names.DLQ)
        config = bus.stream_config(dlq, settings)
        assert (config.max_bytes, config.max_msgs) == (1000, 7)
        assert config.max_age == settings.streams.dlq_max_age_s
        assert config.discard == js_api.DiscardPolicy.OLD

    def test_replicas_reach_every_stream(self) -> None:
        """The resolved replica count is every stream's num_replicas (0 stays 1 where unknown)."""
        assert {bus.stream_config(s, Settings()).num_replicas for s in STREAMS} == {1}
        three = Settings().replace(streams={"replicas": 3})
        assert {bus.stream_config(s, three).num_replicas for s in STREAMS} == {3}

    def test_a_url_list_is_every_server(self) -> None:
        """nats.url may list a cluster's servers, comma-separated."""
        assert bus.server_urls("nats://a:1, nats://b:2,") == ["nats://a:1", "nats://b:2"]

    def test_sync_interval_reaches_the_cluster_config(self) -> None:
        """nats.sync_interval other than default is rendered into the cluster's nats.conf."""
        always = Settings().replace(nats={"sync_interval": "always"})
        assert '  sync_interval: "always"' in nats_conf(always, ClusterConfig()).splitlines()
        assert "sync_interval" not in nats_conf(Settings(), ClusterConfig())


class TestStreamPlacement:
    def test_leader_and_followers_lag(self) -> None:
        """A clustered stream's leader and each follower's state, as status shows them."""
        cluster = js_api.ClusterInfo(
            leader="n1",
            name="framepipe-local",
            replicas=[
                js_api.PeerInfo(name="n0", current=True, lag=0),
                js_api.PeerInfo(name="n2", current=False, offline=True, lag=12),
            ],
        )
        expected = {"leader": "n1", "replicas": "n0 current lag 0, n2 offline lag 12"}
        assert stream_placement(cluster) == expected
        no_leader = js_api.ClusterInfo(leader=None, name="framepipe-local", replicas=[])
        assert stream_placement(no_leader)["leader"] == "none (no quorum)"
        assert stream_placement(None) == {"leader": "", "replicas": ""}
