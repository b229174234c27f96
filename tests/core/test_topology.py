"""The stage table: everything that names a stage derives from it, and stays in step."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from framepipe.cluster.manifests import render_files
from framepipe.core import auth, topology
from framepipe.core.cluster_settings import ClusterConfig, StageScaling, WorkloadResources
from framepipe.core.errors import ConfigError
from framepipe.core.loader import cluster_config_from_tables
from framepipe.core.runner import Stage
from framepipe.core.settings import ConsumerSettings, Settings
from framepipe.core.topology import STAGES, Names, consumer_stages, scaled_stages, stage_spec
from framepipe.local import supervisor
from framepipe.stages import load_stages


class TestStageTable:
    def test_names_are_unique(self) -> None:
        """No two stages and no two consumers share a name."""
        assert len({s.name for s in STAGES}) == len(STAGES)
        durables = [c.durable for c in topology.consumer_specs()]
        assert len(set(durables)) == len(durables)

    def test_every_consumer_stage_has_a_settings_section(self) -> None:
        """A stage's name is its settings section, with the consumer fields every runner reads."""
        fields = {f.name for f in dataclasses.fields(Settings)}
        for spec in consumer_stages():
            assert spec.name in fields
            assert isinstance(Settings().consumer(spec.name), ConsumerSettings)

    def test_entry_points_make_stages_that_declare_the_tables_consumers(self) -> None:
        """``entry`` makes stage objects whose declared consumers are exactly the entry's."""
        for spec in consumer_stages():
            stages = load_stages(spec, Settings())
            assert all(isinstance(stage, Stage) for stage in stages)
            assert tuple(stage.consumer for stage in stages) == spec.consumers

    def test_unknown_stage_is_a_config_error_listing_the_known(self) -> None:
        """``framepipe stage nope`` names the stages there are."""
        with pytest.raises(ConfigError, match="decoder, inference, analysis, encoder, sink"):
            stage_spec("nope")

    def test_a_per_camera_stage_has_no_entry(self) -> None:
        """The gateway runs per camera, so ``load_stages`` refuses it with one line."""
        with pytest.raises(ConfigError, match="per camera"):
            load_stages(stage_spec(Names.GATEWAY), Settings())


class TestDerivedFromTheTable:
    def test_supervisor_runs_every_consumer_stage(self) -> None:
        """``framepipe run`` starts a replica of each consumer stage, in table order."""
        assert tuple(s.name for s in consumer_stages()) == supervisor.STAGES

    def test_nats_users_and_permissions_follow_the_table(self) -> None:
        """Each stage may publish what its entry says, ack only its own consumers, and dead-letter."""
        assert (Names.ADMIN, *(s.name for s in STAGES)) == auth.USERS
        for spec in STAGES:
            publish = auth.permissions(spec.name)["publish"]
            assert set(spec.publishes) <= set(publish)
            assert {f"$KV.{b}.>" for b in spec.writes_buckets} <= set(publish)
            acks = {p for p in publish if p.startswith("$JS.ACK.")}
            assert acks == {f"$JS.ACK.{c.stream}.{c.durable}.>" for c in spec.consumers}
            assert (Names.dlq_subject(spec.name) in publish) == spec.dead_letters

    def test_manifests_have_a_deployment_per_stage_and_a_scaledobject_per_scaled_one(self) -> None:
        """The rendered base holds one Deployment per consumer stage and KEDA objects for the scaled."""
        files = render_files(Settings())
        deployments = [d for d in yaml.safe_load_all(files["base/stages.yaml"]) if d["kind"] == "Deployment"]
        assert [
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments
        ] == [s.name for s in consumer_stages()]
        scaled = list(yaml.safe_load_all(files["base/scaledobjects.yaml"]))
        triggers = {o["spec"]["triggers"][0]["metadata"]["consumer"] for o in scaled}
        assert triggers == {stage_spec(name).consumer.durable for name in scaled_stages()}

    def test_cluster_tables_take_names_and_defaults_from_the_table(self) -> None:
        """``[scaling.*]`` and ``[k8s.resources.*]`` know exactly the table's stages and their defaults."""
        scaling = StageScaling()
        assert scaling.names() == scaled_stages()
        for name in scaled_stages():
            assert scaling[name].lag_threshold == stage_spec(name).lag_threshold
        resources = WorkloadResources()
        assert resources.names() == ("nats", "setup", "web", "demand", *(s.name for s in STAGES))
        assert resources.inference.cpu_request == stage_spec(Names.INFERENCE).resources[0]

    def test_cluster_tables_reject_unknown_stages_and_stay_frozen(self) -> None:
        """A typo in a stage table is one line naming it; the tables cannot be changed in place."""
        with pytest.raises(ConfigError, match=r"unknown setting scaling\.decodr"):
            cluster_config_from_tables(None, {"decodr": {"lag_threshold": 3}})
        with pytest.raises(ConfigError, match=r"unknown setting k8s\.resources\.gpu"):
            cluster_config_from_tables({"resources": {"gpu": {}}}, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ClusterConfig().scaling.decoder = ClusterConfig().scaling.encoder  # type: ignore[misc]

    def test_replace_changes_one_stage(self) -> None:
        """``replace`` returns a new table with one stage's settings changed."""
        scaling = StageScaling()
        quick = dataclasses.replace(scaling.decoder, polling_interval_s=1)
        changed = scaling.replace(decoder=quick)
        assert changed.decoder.polling_interval_s == 1
        assert changed.inference == scaling.inference
        assert scaling.decoder.polling_interval_s != 1
