"""KEDA ScaledObjects: each scaled stage's triggers and HPA behavior.

Two triggers, of which KEDA/HPA take the higher proposal:

* ``lag``: ``nats-jetstream`` on the stage's consumer backlog;
* ``demand`` (feed-forward, where ``[scaling.<stage>]`` has ``feed_forward`` and a
  measured ``gops_per_replica``): ``kubernetes-workload`` counting the camera
  gateway pods, the cluster's camera registry (one Deployment per camera). Its
  ``value`` is how many cameras one replica carries, so the HPA's
  ``ceil(cameras / value)`` is :func:`framepipe.scaling.demand.expected_replicas`.
"""

from __future__ import annotations

from framepipe.cluster.nats import Obj, meta, monitoring_endpoint, trigger_account
from framepipe.cluster.workloads import deployment_name
from framepipe.core.cluster_settings import ClusterConfig, ScalingSettings
from framepipe.core.settings import Settings
from framepipe.core.topology import stage_spec
from framepipe.scaling.autoscale import HPA_TOLERANCE
from framepipe.scaling.demand import DEFAULT_GOPS_PER_S
from framepipe.scaling.output_modes import for_output_mode

#: the gateway pods, one per camera (cluster/cameras.py labels them).
GATEWAY_PODS = "app.kubernetes.io/component=gateway,framepipe.io/camera"


def _rules(window: int, select: str, policies: list[Obj], tolerance: float) -> Obj:
    rules: Obj = {"stabilizationWindowSeconds": window, "selectPolicy": select, "policies": policies}
    if tolerance != HPA_TOLERANCE:
        # behavior.*.tolerance needs Kubernetes >= 1.33 (HPAConfigurableTolerance); the
        # cluster-wide default is left implicit so older clusters accept the object.
        rules["tolerance"] = str(tolerance)
    return rules


def behavior(scaling: ScalingSettings) -> Obj:
    """``horizontalPodAutoscalerConfig.behavior`` from one stage's settings."""
    down = [
        {"type": "Percent", "value": scaling.scale_down_percent, "periodSeconds": scaling.scale_down_period_s}
    ]
    if scaling.scale_down_pods:
        down.append(
            {"type": "Pods", "value": scaling.scale_down_pods, "periodSeconds": scaling.scale_down_period_s}
        )
    up = [
        {"type": "Percent", "value": scaling.scale_up_percent, "periodSeconds": scaling.scale_up_period_s},
        {"type": "Pods", "value": scaling.scale_up_pods, "periodSeconds": scaling.scale_up_period_s},
    ]
    return {
        "scaleUp": _rules(
            scaling.scale_up_stabilization_s, scaling.scale_up_select_policy, up, scaling.scale_up_tolerance
        ),
        "scaleDown": _rules(
            scaling.scale_down_stabilization_s,
            scaling.scale_down_select_policy,
            down,
            scaling.scale_down_tolerance,
        ),
    }


def cameras_per_replica(scaling: ScalingSettings) -> float:
    """How many cameras one replica of the stage carries at its planned utilization."""
    return round(scaling.gops_per_replica * scaling.feed_forward_utilization / DEFAULT_GOPS_PER_S, 3)


def triggers(settings: Settings, cluster: ClusterConfig, stage: str) -> list[Obj]:
    scaling: ScalingSettings = getattr(for_output_mode(cluster.scaling, settings.output.mode), stage)
    consumer = stage_spec(stage).consumer
    out: list[Obj] = [
        {
            "type": "nats-jetstream",
            "name": "lag",
            "metadata": {
                "natsServerMonitoringEndpoint": monitoring_endpoint(settings, cluster),
                "account": trigger_account(cluster),
                "stream": consumer.stream,
                "consumer": consumer.durable,
                "lagThreshold": str(scaling.lag_threshold),
                "activationLagThreshold": str(scaling.activation_lag_threshold),
                "useHttps": "false",
            },
        }
    ]
    if scaling.feed_forward and scaling.gops_per_replica > 0:
        out.append(
            {
                "type": "kubernetes-workload",
                "name": "demand",
                "metadata": {"podSelector": GATEWAY_PODS, "value": str(cameras_per_replica(scaling))},
            }
        )
    return out


def scaled_object(settings: Settings, cluster: ClusterConfig, stage: str) -> Obj:
    """KEDA ScaledObject of one scaled stage (on-demand output: the encoder may sleep at 0)."""
    scaling: ScalingSettings = getattr(for_output_mode(cluster.scaling, settings.output.mode), stage)
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
                "horizontalPodAutoscalerConfig": {"behavior": behavior(scaling)},
            },
            "triggers": triggers(settings, cluster, stage),
        },
    }
