"""The demand endpoint in a cluster: ``framepipe scale demand --serve`` behind a Service.

Each ScaledObject's ``demand`` trigger (KEDA's metrics-api scaler, cluster/keda.py)
reads ``GET /demand`` here: the running cameras' measured GOPs/s from their
source states in ``FP_SOURCES`` (scaling/demand_server.py). It is a process of
its own rather than a route of the web server so that every stage's scaling
input does not depend on the console (one replica, ``Recreate``, every route
behind its token): it needs no token, only the KEDA namespace may reach it
(its NetworkPolicy), it asks NATS nothing but four KV reads a poll, and it can
be restarted without a viewer noticing.
"""

from __future__ import annotations

from framepipe.cluster.nats import Obj, meta, selector
from framepipe.cluster.scheduling import PIPELINE
from framepipe.cluster.workloads import _app_container, _pod_spec, _template, deployment_name
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.scaling.demand_server import DEMAND_PATH

DEMAND = "demand"
DEMAND_PORT = 8095


def demand_url(cluster: ClusterConfig) -> str:
    """The URL KEDA's operator (in its own namespace) reads, by the Service's cluster name."""
    service = f"{deployment_name(DEMAND)}.{cluster.k8s.namespace}.svc.cluster.local"
    return f"http://{service}:{DEMAND_PORT}{DEMAND_PATH}"


def demand_deployment(settings: Settings, cluster: ClusterConfig, config_hash: str) -> Obj:
    """One replica reading the source states as the admin user, as the web server does."""
    container = _app_container(
        settings,
        cluster,
        DEMAND,
        ["scale", "demand", "--serve", "--host", "0.0.0.0", "--port", str(DEMAND_PORT)],
        Names.ADMIN,
        probes=False,
    )
    container["ports"] = [{"name": "http", "containerPort": DEMAND_PORT, "protocol": "TCP"}]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container["livenessProbe"] = {**probe, "failureThreshold": 6}
    container["readinessProbe"] = {**probe, "failureThreshold": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(deployment_name(DEMAND), DEMAND),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(DEMAND)},
            "template": _template(
                DEMAND, config_hash, _pod_spec([container], 10, priorityClassName=PIPELINE), metrics=False
            ),
        },
    }


def demand_service() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(deployment_name(DEMAND), DEMAND),
        "spec": {
            "selector": selector(DEMAND),
            "ports": [{"name": "http", "port": DEMAND_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def demand_network_policy(cluster: ClusterConfig) -> Obj:
    """Only KEDA's namespace reaches the endpoint."""
    keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.k8s.keda_namespace}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(deployment_name(DEMAND), DEMAND),
        "spec": {
            "podSelector": {"matchLabels": selector(DEMAND)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [keda], "ports": [{"protocol": "TCP", "port": DEMAND_PORT}]}],
        },
    }


def demand_objects(settings: Settings, cluster: ClusterConfig, config_hash: str) -> list[Obj]:
    return [
        demand_deployment(settings, cluster, config_hash),
        demand_service(),
        demand_network_policy(cluster),
    ]
