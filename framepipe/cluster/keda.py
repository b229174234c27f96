"""KEDA ScaledObjects: each scaled stage's triggers and HPA behavior.

Two triggers, of which KEDA/HPA take the higher proposal:

* ``lag``: ``nats-jetstream`` on the stage's consumer backlog;
* ``demand`` (feed-forward, where ``[scaling.<stage>]`` has ``feed_forward`` and a
  measured ``gops_per_replica``): ``metrics-api`` reading ``gops_per_s``, the
  running cameras' measured GOPs/s, from the demand endpoint (cluster/demand.py).
  Its ``targetValue`` is what one replica carries
  (:func:`framepipe.scaling.demand.replica_target`), so the HPA's
  ``ceil(gops_per_s / target)`` is :func:`framepipe.scaling.demand.expected_replicas`.
"""

from __future__ import annotations

from framepipe.cluster.demand import demand_url
from framepipe.cluster.nats import Obj, meta, monitoring_endpoint, trigger_account
from framepipe.cluster.workloads import deployment_name
from framepipe.core.cluster_settings import ClusterConfig, ScalingSettings
from framepipe.core.settings import Settings
from framepipe.core.topology import stage_spec
from framepipe.scaling.autoscale import HPA_TOLERANCE
from framepipe.scaling.demand import replica_target
from framepipe.scaling.output_modes import for_output_mode


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
                "type": "metrics-api",
                "name": "demand",
                # AverageValue: the HPA divides by the replicas, and KEDA's fallback needs it.
                "metricType": "AverageValue",
                "metadata": {
                    "url": demand_url(cluster),
                    "format": "json",
                    "valueLocation": "gops_per_s",
                    "targetValue": str(round(replica_target(scaling, scaling.gops_per_replica), 3)),
                    # active (wakes a stage at 0 replicas) while any running camera sends GOPs
                    "activationTargetValue": "0",
                },
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
