"""The demand endpoint in the rendered manifests: rendered where a ScaledObject reads it, and
each demand trigger points at a Service that reaches the endpoint's pod (kubectl kustomize,
the strict Kubernetes schema, the KEDA CRD schema)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from framepipe.cluster.manifests import render_tree
from framepipe.core.loader import cluster_config_from_tables
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES
from tests.manifests import K8S_VERSION, Obj, by_kind, keda_schema, kustomize

RATES = {"decoder": {"gops_per_replica": 2.0}, "encoder": {"gops_per_replica": 1.6}}


class TestDemandManifests:
    def test_demand_triggers_reach_the_endpoint(
        self, tmp_path: Path, settings: Settings, kubectl: str
    ) -> None:
        """With measured rates, every demand trigger's URL is the demand Service, whose port
        reaches the pod serving `framepipe scale demand --serve`; only KEDA's namespace may."""
        jsonschema = pytest.importorskip("jsonschema")
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        cluster = cluster_config_from_tables(None, RATES)
        render_tree(settings, tmp_path, cluster)
        objects = kustomize(kubectl, tmp_path / "overlays" / "cpu")
        scaled = by_kind(objects, "ScaledObject")
        demands = {
            name: t for name, so in scaled.items() for t in so["spec"]["triggers"] if t["name"] == "demand"
        }
        assert set(demands) == {"framepipe-decoder", "framepipe-encoder"}  # the stages with a rate
        assert len(scaled) == len(SCALED_STAGES)
        for so in scaled.values():
            errors = list(jsonschema.Draft7Validator(keda_schema("ScaledObject")["schema"]).iter_errors(so))
            assert not errors, errors[0].message

        service = by_kind(objects, "Service")["framepipe-demand"]
        deployment = by_kind(objects, "Deployment")["framepipe-demand"]
        policy = by_kind(objects, "NetworkPolicy")["framepipe-demand"]
        for obj in (service, deployment, policy):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        namespace = service["metadata"]["namespace"]
        (port,) = service["spec"]["ports"]
        for trigger in demands.values():
            url = urlsplit(trigger["metadata"]["url"])
            assert url.hostname == f"framepipe-demand.{namespace}.svc.cluster.local"
            assert url.port == port["port"]
            assert url.path == "/demand"
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert container["args"][:3] == ["scale", "demand", "--serve"]
        assert {"name": "http", "containerPort": port["port"], "protocol": "TCP"} in container["ports"]
        assert pod["metadata"]["labels"]["framepipe.io/nats-client"] == "true"  # NATS lets it in
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port["port"]}]
        assert rule["from"] == [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": cluster.k8s.keda_namespace}
                }
            }
        ]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    def test_no_endpoint_without_a_demand_trigger(self, rendered: dict[str, list[Obj]]) -> None:
        """The default config has no measured rate: no demand trigger, so no endpoint runs."""
        for overlay in ("cpu", "gpu"):
            assert "framepipe-demand" not in by_kind(rendered[overlay], "Deployment")
            triggers = [
                t
                for so in by_kind(rendered[overlay], "ScaledObject").values()
                for t in so["spec"]["triggers"]
            ]
            assert {t["name"] for t in triggers} == {"lag"}
