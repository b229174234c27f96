"""The workloads of a cluster: stage and gateway Deployments, the setup Job, the HLS claim.

Every name comes from :mod:`framepipe.core.topology`, every tunable from
:class:`~framepipe.core.settings.Settings` and
:class:`~framepipe.core.cluster_settings.ClusterConfig`; what the NATS
StatefulSet needs is in :mod:`framepipe.cluster.nats`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from framepipe.cluster.nats import (
    APP,
    CLIENT_LABEL,
    Obj,
    container_security,
    labels,
    meta,
    nats_auth_env,
    nats_client_env,
    pod_security,
    resources,
    selector,
)
from framepipe.cluster.scheduling import INGEST, PIPELINE
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, consumer_stages, validate_camera_name

CONFIG_MAP = "framepipe-config"
METRICS_PORT = 8080
APP_UID = 10001
MODELS_DIR = "/opt/framepipe/models"
HLS_DIR = "/data/hls"
STATE_DIR = "/tmp/framepipe"
ENGINE_CACHE = "/var/cache/framepipe"
#: absolute, on the engine-cache claim: TensorRT engines outlive the pod that built them.
ENGINE_CACHE_DIR = f"{ENGINE_CACHE}/engines"
ENGINE_CLAIM = "framepipe-engine-cache"
HLS_CLAIM = "framepipe-hls"
#: the stages that run as replicas of a consumer, from the topology table.
STAGES = tuple(spec.name for spec in consumer_stages())


def deployment_name(component: str) -> str:
    return f"{APP}-{component}"


def cluster_settings(settings: Settings, cluster: ClusterConfig) -> Settings:
    """The stage settings as the pods see them (ports, paths and replicas fixed by the cluster)."""
    port = {"metrics_port": METRICS_PORT, "metrics_host": "0.0.0.0"}  # in a pod: probes and scrapes
    return settings.replace(
        streams={"storage": "file", "replicas": cluster.k8s.stream_replicas},
        gateway=port,
        decoder=port,
        inference={**port, "models_dir": MODELS_DIR},
        encoder=port,
        analysis=port,
        sink={**port, "output_dir": HLS_DIR},
        local={"state_dir": STATE_DIR},
    )


def config_env(settings: Settings, cluster: ClusterConfig) -> str:
    """The ``framepipe-config`` ConfigMap as an env file (NATS URL and credentials are set per pod)."""
    env = cluster_settings(settings, cluster).to_env()
    # Per pod, from the NATS auth Secret: the URL, and never a credential in a ConfigMap.
    for key in ("URL", "USER", "PASSWORD"):
        env.pop(f"FRAMEPIPE_NATS__{key}", None)
    env.pop("FRAMEPIPE_WEBRTC__ICE_CREDENTIAL", None)  # the web pod reads it from its Secret
    # [local] configures `framepipe run` on a laptop (embedded NATS, autoscaler): no pod reads it.
    env = {key: value for key, value in env.items() if not key.startswith("FRAMEPIPE_LOCAL__")}
    for key, value in env.items():
        if "\n" in value:
            raise ConfigError(f"setting {key} contains a newline, which an env file cannot hold")
    return "".join(f"{key}={env[key]}\n" for key in sorted(env))


def grace_seconds(settings: Settings, cluster: ClusterConfig, stage: str) -> int:
    """Long enough to finish a fetched batch and ack it after SIGTERM."""
    return math.ceil(settings.consumer(stage).ack_wait_s * 2) + cluster.k8s.drain_margin_s


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def config_digest(settings: Settings, cluster: ClusterConfig) -> str:
    """Pod annotation that changes (and so rolls the pods) when their config or secret does."""
    auth = nats_auth_env() if cluster.k8s.nats_auth else ""
    return digest(config_env(settings, cluster), auth, cluster.k8s.image)


def _app_container(
    settings: Settings,
    cluster: ClusterConfig,
    name: str,
    args: list[str],
    user: str,
    *,
    probes: bool,
    extra_env: list[Obj] | None = None,
) -> Obj:
    container: Obj = {
        "name": name,
        "image": cluster.k8s.image,
        "imagePullPolicy": cluster.k8s.image_pull_policy,
        "command": ["framepipe"],
        "args": args,
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "env": nats_client_env(cluster, user) + (extra_env or []),
        "resources": resources(getattr(cluster.resources, name)),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if probes:
        container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]

        def probe(path: str, period: int, failures: int) -> Obj:
            return {
                "httpGet": {"path": path, "port": "metrics"},
                "periodSeconds": period,
                "timeoutSeconds": 3,
                "failureThreshold": failures,
            }

        container["startupProbe"] = probe("/healthz", 5, 60)
        container["livenessProbe"] = probe("/healthz", 10, 6)
        container["readinessProbe"] = probe("/readyz", 5, 3)
    return container


def _pod_spec(containers: list[Obj], grace: int, volumes: list[Obj] | None = None, **extra: Any) -> Obj:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": pod_security(APP_UID),
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}] + (volumes or []),
        **extra,
    }


def _template(component: str, config_hash: str, spec: Obj, *, metrics: bool, **extra_labels: str) -> Obj:
    annotations = {"framepipe.io/config-hash": config_hash}
    if metrics:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            }
        )
    return {
        "metadata": {
            "labels": {**labels(component), CLIENT_LABEL: "true", **extra_labels},
            "annotations": annotations,
        },
        "spec": spec,
    }


def stage_deployment(settings: Settings, cluster: ClusterConfig, stage: str, config_hash: str) -> Obj:
    """The Deployment of one stage; KEDA owns ``replicas`` of the scaled ones."""
    volumes: list[Obj] = []
    container = _app_container(settings, cluster, stage, ["stage", stage], stage, probes=True)
    spec: Obj = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector(stage)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
    }
    if stage == Names.SINK:
        container["volumeMounts"].append({"name": "hls", "mountPath": HLS_DIR})
        volumes.append({"name": "hls", "persistentVolumeClaim": {"claimName": HLS_CLAIM}})
        spec = {**spec, "replicas": 1, "strategy": {"type": "Recreate"}}
    spec["template"] = _template(
        stage,
        config_hash,
        _pod_spec([container], grace_seconds(settings, cluster, stage), volumes, priorityClassName=PIPELINE),
        metrics=True,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(deployment_name(stage), stage),
        "spec": spec,
    }


def gateway_deployment(
    settings: Settings, cluster: ClusterConfig, camera: str, source: str, config_hash: str | None = None
) -> Obj:
    """One camera's gateway (``framepipe gateway --camera NAME --source URL``)."""
    validate_camera_name(camera)
    if not source:
        raise ConfigError("a camera needs --source (rtsp://... or a file URL)")
    config_hash = config_hash if config_hash is not None else config_digest(settings, cluster)
    name = f"{APP}-gateway-{camera.lower().replace('_', '-')}"
    if len(name) > 63:
        raise ConfigError(f"camera name {camera!r} is too long for a Deployment name ({name})")
    container = _app_container(
        settings,
        cluster,
        "gateway",
        ["gateway", "--camera", camera, "--source", source],
        "gateway",
        probes=True,
    )
    spec = _pod_spec([container], 30, priorityClassName=INGEST)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": cluster.k8s.namespace,
            "labels": {**labels("gateway"), "framepipe.io/camera": camera},
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {**selector("gateway"), "framepipe.io/camera": camera}},
            "template": _template(
                "gateway", config_hash, spec, metrics=False, **{"framepipe.io/camera": camera}
            ),
        },
    }


def setup_job(settings: Settings, cluster: ClusterConfig, config_hash: str) -> Obj:
    """``framepipe setup`` (ensure_topology); named by config hash so a new config reruns it."""
    container = _app_container(settings, cluster, "setup", ["setup"], "setup", probes=False)
    template = _template(
        "setup",
        config_hash,
        _pod_spec([container], 30, restartPolicy="OnFailure", priorityClassName=PIPELINE),
        metrics=False,
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(f"{APP}-setup-{config_hash[:8]}", "setup"),
        "spec": {
            "backoffLimit": cluster.k8s.setup_backoff_limit,
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": cluster.k8s.setup_ttl_s,
            "template": template,
        },
    }


def _claim(name: str, component: str, access_mode: str, gib: int, storage_class: str) -> Obj:
    """A PersistentVolumeClaim of ``gib``; the cluster's default storage class unless one is named."""
    spec: Obj = {"accessModes": [access_mode], "resources": {"requests": {"storage": f"{gib}Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(name, component),
        "spec": spec,
    }


def hls_claim(cluster: ClusterConfig) -> Obj:
    k8s = cluster.k8s
    return _claim(HLS_CLAIM, "sink", "ReadWriteOnce", k8s.sink_storage_gib, k8s.sink_storage_class)


def engine_cache_claim(cluster: ClusterConfig) -> Obj:
    """The GPU overlay's TensorRT engine cache, shared by every inference pod (ReadWriteMany):
    an engine is built once per GPU model, not once per pod. Writes are atomic (EngineCache)."""
    k8s = cluster.k8s
    return _claim(
        ENGINE_CLAIM, "inference", "ReadWriteMany", k8s.engine_cache_gib, k8s.engine_cache_storage_class
    )


def namespace(cluster: ClusterConfig) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": cluster.k8s.namespace,
            "labels": {
                **labels("namespace"),
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }


def gpu_patch(settings: Settings, cluster: ClusterConfig, stage: str) -> Obj:
    k = cluster.k8s
    env: list[Obj] = [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility,video"}]
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    if stage == Names.INFERENCE:
        env += [
            {"name": "FRAMEPIPE_INFERENCE__BACKEND", "value": "tensorrt"},
            {"name": "XDG_CACHE_HOME", "value": ENGINE_CACHE},
            {"name": "FRAMEPIPE_INFERENCE__ENGINE_CACHE_DIR", "value": ENGINE_CACHE_DIR},
        ]
        mounts.append({"name": "engine-cache", "mountPath": ENGINE_CACHE})
        volumes.append({"name": "engine-cache", "persistentVolumeClaim": {"claimName": ENGINE_CLAIM}})
    if stage == Names.ENCODER:
        env.append({"name": "FRAMEPIPE_ENCODER__CODEC", "value": "h264_nvenc"})
    container: Obj = {
        "name": stage,
        "image": k.gpu_image,
        "env": env,
        "resources": {"limits": {"nvidia.com/gpu": str(k.gpu_per_pod)}},
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod: Obj = {
        "nodeSelector": {k.gpu_node_selector_key: k.gpu_node_selector_value},
        "tolerations": [{"key": k.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
    }
    if volumes:
        pod["volumes"] = volumes
    if k.gpu_runtime_class:
        pod["runtimeClassName"] = k.gpu_runtime_class
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(stage)},
        "spec": {"template": {"spec": pod}},
    }
