"""Monitoring manifests: a PodMonitor, the PrometheusRule and the Grafana dashboard ConfigMap.

The rules (``rules.yml``, unit-tested with ``promtool test rules rules_test.yml``) and the
dashboard (``grafana-dashboard.json``) are files in this package; this
module wraps them for the Prometheus operator and a Grafana dashboard sidecar into
``k8s/monitoring/``, a kustomization of its own (apply it where the operator's CRDs are
installed: ``kubectl apply -k k8s/monitoring``). The PodMonitor scrapes every
consumer stage's ``metrics`` port and copies the pod's component label to
``framepipe_stage``, the target label the rules' ``up`` alerts use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from framepipe.cluster.nats import APP, Obj, labels
from framepipe.cluster.workloads import STAGES
from framepipe.core.cluster_settings import ClusterConfig

FILES = Path(__file__).parent
RULES = FILES / "rules.yml"
DASHBOARD = FILES / "grafana-dashboard.json"
#: the label the rules' ``up`` alerts group by (relabelled from the pod's component).
STAGE_LABEL = "framepipe_stage"
COMPONENT = "monitoring"
SCRAPE_INTERVAL = "15s"


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def pod_monitor(cluster: ClusterConfig) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"{APP}-stages", "labels": labels(COMPONENT)},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": APP},
                "matchExpressions": [
                    {"key": "app.kubernetes.io/component", "operator": "In", "values": list(STAGES)}
                ],
            },
            "namespaceSelector": {"matchNames": [cluster.k8s.namespace]},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                            "targetLabel": STAGE_LABEL,
                        }
                    ],
                }
            ],
        },
    }


def prometheus_rule() -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": APP, "labels": labels(COMPONENT)},
        "spec": {"groups": rule_groups()},
    }


def kustomization(cluster: ClusterConfig) -> dict[str, Any]:
    return {
        "namespace": cluster.k8s.namespace,
        "resources": ["podmonitor.yaml", "prometheusrule.yaml"],
        "generatorOptions": {"disableNameSuffixHash": True},
        "configMapGenerator": [
            {
                "name": f"{APP}-grafana-dashboard",
                "files": [f"{APP}.json=grafana-dashboard.json"],
                # the Grafana Helm chart's dashboard sidecar picks up ConfigMaps with this label.
                "options": {"labels": {"grafana_dashboard": "1"}},
            }
        ],
    }
