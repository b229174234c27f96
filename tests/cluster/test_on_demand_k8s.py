"""On-demand output in the cluster: the encoder's ScaledObject may go to zero replicas and
wakes on its lag alone (the camera count says nothing about who watches)."""

from __future__ import annotations

import pytest

from framepipe.cluster.keda import scaled_object
from framepipe.core.loader import cluster_config_from_tables, load_settings
from tests.manifests import keda_schema


class TestOnDemandScaledObject:
    @pytest.mark.parametrize("mode", ["on-demand", "overlay"])
    def test_encoder_sleeps_at_zero_on_its_lag_trigger_and_validates(self, mode: str) -> None:
        """[output] mode = on-demand or overlay: encoder minReplicaCount 0, only the lag trigger
        (even with a measured rate), valid against the KEDA CRD; other stages keep theirs."""
        jsonschema = pytest.importorskip("jsonschema")
        settings = load_settings(None, env={"FRAMEPIPE_OUTPUT__MODE": mode})
        rates = {stage: {"gops_per_replica": 1.6} for stage in ("encoder", "decoder")}
        cluster = cluster_config_from_tables(None, rates)
        encoder = scaled_object(settings, cluster, "encoder")
        crd = keda_schema("ScaledObject")
        errors = sorted(jsonschema.Draft7Validator(crd["schema"]).iter_errors(encoder), key=str)
        assert not errors, f"{errors[0].message} at {list(errors[0].path)}"
        assert encoder["spec"]["minReplicaCount"] == 0
        assert [t["name"] for t in encoder["spec"]["triggers"]] == ["lag"]
        assert encoder["spec"]["triggers"][0]["metadata"]["consumer"] == "encoder"
        decoder = scaled_object(settings, cluster, "decoder")
        assert decoder["spec"]["minReplicaCount"] == 1
        assert [t["name"] for t in decoder["spec"]["triggers"]] == ["lag", "demand"]
        burn_in = scaled_object(load_settings(None, env={}), cluster, "encoder")
        assert burn_in["spec"]["minReplicaCount"] == 1
        assert [t["name"] for t in burn_in["spec"]["triggers"]] == ["lag", "demand"]
