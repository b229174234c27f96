"""Cameras added/removed at run time: the local KV bucket and the Kubernetes objects.

The end-to-end path (``framepipe cameras add`` reaching a running ``framepipe
run``) is in tests/stages/test_rtsp.py; the cluster test runs only with KUBECONFIG.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from framepipe.cluster.cameras import SOURCE_ENV, KubeCameras, camera_objects, owner_reference, secret_name
from framepipe.cluster.workloads import gateway_deployment
from framepipe.core.bus import setup_topology
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from framepipe.local.cameras import CameraSpec, CameraWatch, delete_camera, list_cameras, put_camera

K8S_VERSION = "1.33.0"
SOURCE = "rtsp://viewer:s3cret@10.0.0.7:554/stream1"


def _validate(obj: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_camera_objects_are_valid_and_keep_the_url_in_a_secret() -> None:
    """A camera's Deployment and Secret validate, match the camera template; only the Secret has the URL."""
    settings, cluster = load_settings(None, env={}), ClusterConfig()
    deployment, secret = camera_objects(settings, cluster, "Front_Door", SOURCE)
    _validate(deployment)
    owned = {
        **secret,
        "metadata": {**secret["metadata"], "ownerReferences": [owner_reference(deployment, "u-1")]},
    }
    _validate(owned)

    # Same object as the k8s/camera template (framepipe.cluster.manifests), only the source differs.
    template = gateway_deployment(settings, cluster, "Front_Door", f"$({SOURCE_ENV})")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["gateway", "--camera", "Front_Door", "--source", f"$({SOURCE_ENV})"]
    assert container["envFrom"] == [{"configMapRef": {"name": "framepipe-config"}}]
    assert container["env"][-1] == {
        "name": SOURCE_ENV,
        "valueFrom": {"secretKeyRef": {"name": secret_name("Front_Door"), "key": "url"}},
    }
    assert deployment["spec"]["template"] == {
        **template["spec"]["template"],
        "spec": deployment["spec"]["template"]["spec"],
    }
    assert deployment["metadata"]["labels"]["framepipe.io/camera"] == "Front_Door"
    assert secret["metadata"]["labels"]["framepipe.io/camera"] == "Front_Door"
    assert secret["stringData"] == {"url": SOURCE}
    assert "s3cret" not in json.dumps(deployment)
    assert deployment["metadata"]["annotations"]["framepipe.io/source"] == "rtsp://***@10.0.0.7:554/stream1"


@pytest.mark.integration
def test_cli_kubernetes_without_kubeconfig_is_a_one_line_error(tmp_path: Path) -> None:
    """`framepipe cameras add --kubernetes` without KUBECONFIG exits 1 with one line, no password in it."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "framepipe", "cameras", "add", "door", SOURCE, "--kubernetes"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "KUBECONFIG" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_cameras_bucket_and_watch(nats_settings: Settings) -> None:
    """put/list/delete on FP_CAMERAS, and the supervisor's watch sees a snapshot then changes."""
    settings = nats_settings
    asyncio.run(setup_topology(settings))
    asyncio.run(put_camera(settings, CameraSpec("a", "rtsp://h/a")))
    watch = CameraWatch(settings).start()
    try:
        deadline = time.monotonic() + 10
        events: list[tuple[str, Any]] = []
        while time.monotonic() < deadline and len(events) < 1:
            events += watch.changes()
            time.sleep(0.05)
        assert events == [("snapshot", {"a": CameraSpec("a", "rtsp://h/a")})]
        asyncio.run(put_camera(settings, CameraSpec("b", "clip.mp4", "fast")))
        assert asyncio.run(delete_camera(settings, "a"))
        assert not asyncio.run(delete_camera(settings, "nope"))
        while time.monotonic() < deadline and len(events) < 3:
            events += watch.changes()
            time.sleep(0.05)
        assert events[1:] == [("put", CameraSpec("b", "clip.mp4", "fast")), ("delete", "a")]
        assert asyncio.run(list_cameras(settings)) == [CameraSpec("b", "clip.mp4", "fast")]
    finally:
        watch.stop()


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG not set (no cluster)")
def test_cluster_add_list_remove_camera() -> None:
    """On a real cluster: add makes the Deployment and its owned Secret, list shows it, remove deletes it."""
    settings, cluster = load_settings(None, env={}), ClusterConfig()
    kube = KubeCameras(cluster.k8s.namespace)
    name = f"t{uuid.uuid4().hex[:8]}"
    kube.add(*camera_objects(settings, cluster, name, SOURCE))
    try:
        assert name in [camera for camera, _, _ in kube.list()]
        secret = kube.core.read_namespaced_secret(secret_name(name), cluster.k8s.namespace)
        assert secret.metadata.owner_references[0].kind == "Deployment"
    finally:
        assert kube.remove(name)
    assert name not in [camera for camera, _, _ in kube.list()]


@pytest.mark.integration
def test_cli_without_a_running_system_is_a_one_line_error(tmp_path: Path) -> None:
    """`framepipe cameras add` with no server at the configured URL: exit 3, one line saying so."""
    env = {**os.environ, "FRAMEPIPE_NATS__URL": "nats://127.0.0.1:9"}
    env["FRAMEPIPE_NATS__CONNECT_TIMEOUT_S"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "framepipe", "cameras", "add", "door", SOURCE],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert "no framepipe system is running" in result.stderr


@pytest.mark.usefixtures("js")  # the topology, as `framepipe setup` creates it
async def test_empty_camera_bucket_lists_nothing(nats_settings: Settings) -> None:
    """`framepipe cameras list` before any camera was added is an empty list, not a crash."""
    assert await list_cameras(nats_settings) == []


def test_cli_tools_attach_to_the_running_system(tmp_path: Path) -> None:
    """status/cameras/dlq find a running `framepipe run` through its runtime.json; without
    one (or with a broken one) they keep the configured URL."""
    from framepipe.local.runtime import Runtime, attach_to_running

    settings = Settings().replace(local={"state_dir": str(tmp_path)})
    assert attach_to_running(settings) == (settings, None)
    (tmp_path / "runtime.json").write_text("{not json")
    assert attach_to_running(settings)[0].nats.url == settings.nats.url
    (tmp_path / "runtime.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:4999", "processes": []}))
    attached, runtime = attach_to_running(settings)
    assert attached.nats.url == "nats://127.0.0.1:4999"
    assert runtime == Runtime("nats://127.0.0.1:4999")
