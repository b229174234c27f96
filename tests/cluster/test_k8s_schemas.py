"""The rendered Kubernetes objects pass the real schemas, and the ScaledObjects mean what the pipeline does.

Real tools only: ``kubectl kustomize``, the Kubernetes OpenAPI schemas (pip
``kubernetes-validate``) and the upstream KEDA CRD schemas in ``<repo>/../shared/keda``.
"""

from __future__ import annotations

import re

import pytest

from framepipe.cluster.keda import scaled_object
from framepipe.cluster.nats import (
    NATS_HEADLESS,
)
from framepipe.core import topology
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.loader import cluster_config_from_tables
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES
from tests.manifests import K8S_VERSION, Obj, by_kind, keda_schema


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "camera"])
def test_objects_validate_against_kubernetes_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Every built-in object passes the strict Kubernetes OpenAPI schema (no unknown fields)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    builtin = [o for o in rendered[overlay] if not o["apiVersion"].startswith("keda.sh/")]
    assert builtin
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_keda_objects_validate_against_crd_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """ScaledObjects (and TriggerAuthentications, if any) pass the upstream KEDA CRD schema."""
    jsonschema = pytest.importorskip("jsonschema")
    keda = [o for o in rendered[overlay] if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} <= {"ScaledObject", "TriggerAuthentication"}
    assert keda
    for obj in keda:
        crd = keda_schema(obj["kind"])
        assert obj["apiVersion"] == crd["apiVersion"]
        errors = sorted(jsonschema.Draft7Validator(crd["schema"]).iter_errors(obj), key=str)
        assert not errors, (
            f"{obj['kind']}/{obj['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
        )


def test_scaling_options_render_and_validate(rendered: dict[str, list[Obj]], settings: Settings) -> None:
    """Feed-forward (a metrics-api trigger on the demand endpoint's GOPs/s), tolerances,
    selectPolicy and a Pods scale-down policy render into a ScaledObject the KEDA CRD accepts."""
    jsonschema = pytest.importorskip("jsonschema")
    cluster = cluster_config_from_tables(
        None,
        {
            "encoder": {
                "gops_per_replica": 1.6,
                "feed_forward_utilization": 0.8,
                "scale_up_tolerance": 0.05,
                "scale_down_select_policy": "Min",
                "scale_down_pods": 2,
            }
        },
    )
    so = scaled_object(settings, cluster, "encoder")
    crd = keda_schema("ScaledObject")
    errors = sorted(jsonschema.Draft7Validator(crd["schema"]).iter_errors(so), key=str)
    assert not errors, f"{errors[0].message} at {list(errors[0].path)}"
    lag, demand = so["spec"]["triggers"]
    assert lag["name"] == "lag"
    assert demand == {
        "type": "metrics-api",
        "name": "demand",
        "metricType": "AverageValue",
        "metadata": {
            "url": "http://framepipe-demand.framepipe.svc.cluster.local:8095/demand",
            "format": "json",
            "valueLocation": "gops_per_s",
            "targetValue": "1.28",  # GOPs/s one replica carries: gops_per_replica × utilization
            "activationTargetValue": "0",
        },
    }
    b = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert b["scaleUp"]["tolerance"] == "0.05"
    assert "tolerance" not in b["scaleDown"]  # the cluster default stays implicit (pre-1.33 clusters)
    assert b["scaleDown"]["selectPolicy"] == "Min"
    assert {"type": "Pods", "value": 2, "periodSeconds": 60} in b["scaleDown"]["policies"]
    # Without a measured rate there is no demand trigger (no guess).
    assert len(scaled_object(settings, ClusterConfig(), "encoder")["spec"]["triggers"]) == 1


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_scaled_objects_mean_what_the_pipeline_does(
    rendered: dict[str, list[Obj]], settings: Settings, overlay: str
) -> None:
    """Each ScaledObject targets a Deployment, a consumer setup creates, and the headless NATS
    Service, under which KEDA can reach each node (``<pod>.<headless>``) to read the leader."""
    objects = rendered[overlay]
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    statefulset = by_kind(objects, "StatefulSet")["framepipe-nats"]
    created = {(spec.stream, spec.durable) for spec in topology.consumer_specs()}
    streams = {spec.name for spec in topology.STREAMS}
    conf = by_kind(objects, "ConfigMap")["framepipe-nats-config"]["data"]["nats.conf"]
    targets: dict[str, int] = {}
    for so in by_kind(objects, "ScaledObject").values():
        ref = so["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert ref["name"] in deployments
        assert so["metadata"]["namespace"] == deployments[ref["name"]]["metadata"]["namespace"]
        targets[ref["name"]] = targets.get(ref["name"], 0) + 1
        assert "replicas" not in deployments[ref["name"]]["spec"], "KEDA owns replicas of a scaled Deployment"
        trigger = so["spec"]["triggers"][0]
        assert (trigger["type"], trigger["name"]) == ("nats-jetstream", "lag")
        md = trigger["metadata"]
        assert (md["stream"], md["consumer"]) in created
        assert md["stream"] in streams
        stage = topology.consumer_spec(md["consumer"]).stage
        assert deployments[ref["name"]]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "stage",
            stage,
        ]
        host, port = md["natsServerMonitoringEndpoint"].split(":")
        ns = so["metadata"]["namespace"]
        assert host == f"{NATS_HEADLESS}.{ns}.svc.cluster.local"
        monitor = services[NATS_HEADLESS]
        assert monitor["spec"]["clusterIP"] == "None"
        assert statefulset["spec"]["serviceName"] == NATS_HEADLESS
        assert int(port) == settings.nats.monitor_port
        monitor_port = next(p for p in monitor["spec"]["ports"] if p["port"] == int(port))
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"].items() <= pod_labels.items()
        ports = {
            p["name"]: p["containerPort"]
            for p in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert ports[monitor_port["targetPort"]] == int(port)
        assert re.search(rf"^\s*{re.escape(md['account'])} {{\n\s*jetstream: enabled", conf, re.M)
        assert int(md["lagThreshold"]) >= 1
        assert int(md["activationLagThreshold"]) >= 0
        spec = so["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"]
    scaled = {f"framepipe-{stage}" for stage in SCALED_STAGES}
    assert targets == dict.fromkeys(scaled, 1), "every scaled stage has exactly one ScaledObject"
