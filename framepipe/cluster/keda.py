"""KEDA ScaledObjects: each scaled stage's nats-jetstream trigger and HPA behavior."""

from __future__ import annotations

from framepipe.cluster.nats import Obj, meta, monitoring_endpoint, trigger_account
from framepipe.cluster.workloads import deployment_name
from framepipe.core.cluster_settings import ClusterConfig, ScalingSettings
from framepipe.core.settings import Settings
from framepipe.core.topology import stage_spec


def scaled_object(settings: Settings, cluster: ClusterConfig, stage: str) -> Obj:
    """KEDA ScaledObject: nats-jetstream trigger on the stage's consumer backlog."""
    scaling: ScalingSettings = getattr(cluster.scaling, stage)
    spec_ = stage_spec(stage).consumer
    name = deployment_name(stage)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(name, stage),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": scaling.polling_interval_s,
            "cooldownPeriod": scaling.cooldown_period_s,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "fallback": {
                "failureThreshold": scaling.fallback_failure_threshold,
                "replicas": scaling.fallback_replicas,
            },
            "advanced": {
                "restoreToOriginalReplicaCount": False,
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": scaling.scale_up_stabilization_s,
                            "selectPolicy": "Max",
                            "policies": [
                                {
                                    "type": "Percent",
                                    "value": scaling.scale_up_percent,
                                    "periodSeconds": scaling.scale_up_period_s,
                                },
                                {
                                    "type": "Pods",
                                    "value": scaling.scale_up_pods,
                                    "periodSeconds": scaling.scale_up_period_s,
                                },
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.scale_down_stabilization_s,
                            "selectPolicy": "Max",
                            "policies": [
                                {
                                    "type": "Percent",
                                    "value": scaling.scale_down_percent,
                                    "periodSeconds": scaling.scale_down_period_s,
                                }
                            ],
                        },
                    }
                },
            },
            "triggers": [
                {
                    "type": "nats-jetstream",
                    "metadata": {
                        "natsServerMonitoringEndpoint": monitoring_endpoint(settings, cluster),
                        "account": trigger_account(cluster),
                        "stream": spec_.stream,
                        "consumer": spec_.durable,
                        "lagThreshold": str(scaling.lag_threshold),
                        "activationLagThreshold": str(scaling.activation_lag_threshold),
                        "useHttps": "false",
                    },
                }
            ],
        },
    }
