"""Cameras in a cluster: a gateway Deployment (+ Secret) per camera.

Each camera is a gateway Deployment rendered by
:func:`framepipe.cluster.manifests.gateway_deployment` (the same object as
``k8s/camera/``), created or deleted through the ``kubernetes`` Python client.
The source URL (it may hold credentials) goes into a per-camera Secret owned by
the Deployment; the container reads it as ``$(FRAMEPIPE_SOURCE_URL)``, so it is
never in the Deployment spec. Settings come from the ``framepipe-config``
ConfigMap as for every stage.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from framepipe.cluster.nats import labels
from framepipe.cluster.workloads import gateway_deployment
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.errors import ConfigError, SetupError
from framepipe.core.settings import Settings
from framepipe.core.sources import redact
from framepipe.core.topology import validate_camera_name

Obj = dict[str, Any]
SOURCE_ENV = "FRAMEPIPE_SOURCE_URL"
CAMERA_LABEL = "framepipe.io/camera"
THERMAL_LABEL = "framepipe.io/thermal-of"


def secret_name(camera: str) -> str:
    return f"framepipe-camera-{camera.lower().replace('_', '-')}"


def camera_objects(
    settings: Settings, cluster: ClusterConfig, camera: str, source: str, *, thermal_of: str | None = None
) -> tuple[Obj, Obj]:
    """(Deployment, Secret) of one camera; the Deployment is ``k8s/camera/``'s template.

    A thermal camera's gateway gets ``--thermal-of VISIBLE`` (its GOPs go to THERMAL) and
    the ``framepipe.io/thermal-of`` label, from which :meth:`KubeCameras.specs` reads the pairing."""
    validate_camera_name(camera)
    if not source:
        raise ConfigError("a camera needs a source (rtsp://... URL)")
    deployment = gateway_deployment(settings, cluster, camera, f"$({SOURCE_ENV})")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if thermal_of:
        container["args"] = [*container["args"], "--thermal-of", validate_camera_name(thermal_of)]
        deployment["metadata"]["labels"][THERMAL_LABEL] = thermal_of
    container["env"] = [
        *container["env"],
        {"name": SOURCE_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name(camera), "key": "url"}}},
    ]
    deployment["metadata"].setdefault("annotations", {})["framepipe.io/source"] = redact(source)
    secret: Obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(camera),
            "namespace": deployment["metadata"]["namespace"],
            "labels": {**labels("gateway"), CAMERA_LABEL: camera},
        },
        "type": "Opaque",
        "stringData": {"url": source},
    }
    return deployment, secret


def owner_reference(owner: Obj, uid: str) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }


class KubeCameras:
    """Create/delete/list camera gateways through the Kubernetes API (needs KUBECONFIG)."""

    def __init__(self, namespace: str) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise SetupError("the kubernetes client is missing: pip install 'framepipe[k8s]'") from None
        if not os.environ.get("KUBECONFIG"):
            raise SetupError("KUBECONFIG is not set: point it at the cluster to use (nothing was changed)")
        config.load_kube_config()  # type: ignore[no-untyped-call]
        self.apps: Any = client.AppsV1Api()
        self.core: Any = client.CoreV1Api()
        self.namespace = namespace
        self.api_error = client.exceptions.ApiException

    def add(self, deployment: Obj, secret: Obj) -> None:
        name = deployment["metadata"]["name"]
        try:
            created = self.apps.create_namespaced_deployment(self.namespace, deployment)
        except self.api_error as exc:
            if exc.status != 409:
                raise
            created = self.apps.replace_namespaced_deployment(name, self.namespace, deployment)
        # The Secret belongs to the Deployment: deleting the camera collects it.
        secret = {
            **secret,
            "metadata": {
                **secret["metadata"],
                "ownerReferences": [owner_reference(deployment, created.metadata.uid)],
            },
        }
        try:
            self.core.create_namespaced_secret(self.namespace, secret)
        except self.api_error as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(secret["metadata"]["name"], self.namespace, secret)

    def remove(self, camera: str) -> bool:
        selector = f"app.kubernetes.io/component=gateway,{CAMERA_LABEL}={camera}"
        found = self.apps.list_namespaced_deployment(self.namespace, label_selector=selector).items
        for item in found:
            self.apps.delete_namespaced_deployment(
                item.metadata.name, self.namespace, propagation_policy="Background"
            )
        with contextlib.suppress(self.api_error):
            self.core.delete_namespaced_secret(secret_name(camera), self.namespace)
        return bool(found)

    def pairings(self) -> list[tuple[str, str | None]]:
        """(camera, the visible camera it is the thermal camera of, or None) of every camera."""
        items = self.apps.list_namespaced_deployment(
            self.namespace, label_selector="app.kubernetes.io/component=gateway"
        ).items
        found = ((item.metadata.labels or {}) for item in items)
        return [(tags[CAMERA_LABEL], tags.get(THERMAL_LABEL)) for tags in found if CAMERA_LABEL in tags]

    def list(self) -> list[tuple[str, str, str]]:
        items = self.apps.list_namespaced_deployment(
            self.namespace, label_selector="app.kubernetes.io/component=gateway"
        ).items
        out = []
        for item in items:
            camera = (item.metadata.labels or {}).get(CAMERA_LABEL, "?")
            source = (item.metadata.annotations or {}).get("framepipe.io/source", "")
            ready = f"{item.status.ready_replicas or 0}/{item.spec.replicas}"
            out.append((camera, source, ready))
        return sorted(out)
