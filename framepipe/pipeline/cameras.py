"""Cameras: add/remove/list while the system runs.

Locally the desired cameras live in the NATS KV bucket ``FP_CAMERAS``
(name → JSON ``{"source", "pacing"}``). The supervisor of ``framepipe run``
watches the bucket (:class:`CameraWatch`) and spawns or stops one gateway
process per camera, with no restart of anything else.

In a cluster (``--kubernetes``) each camera is a gateway Deployment rendered by
:func:`framepipe.pipeline.k8s.gateway_deployment` (the same object as
``k8s/camera/``), created or deleted through the ``kubernetes`` Python client.
The source URL (it may hold credentials) goes into a per-camera Secret owned by
the Deployment; the container reads it as ``$(FRAMEPIPE_SOURCE_URL)``, so it is
never in the Deployment spec. Settings come from the ``framepipe-config``
ConfigMap as for every stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError

from framepipe.pipeline import bus
from framepipe.pipeline.config import Names, Settings, load_settings, validate_camera_name
from framepipe.pipeline.errors import ConfigError, FramepipeError, SetupError
from framepipe.stages.gateway import _redact

log = structlog.get_logger("framepipe.cameras")
Obj = dict[str, Any]
SOURCE_ENV = "FRAMEPIPE_SOURCE_URL"
CAMERA_LABEL = "framepipe.io/camera"


@dataclass(frozen=True)
class CameraSpec:
    name: str
    source: str
    pacing: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({"source": self.source, "pacing": self.pacing}).encode()

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> CameraSpec:
        data = json.loads(raw)
        return cls(name, str(data["source"]), data.get("pacing"))


def check_source(source: str) -> str:
    if not source:
        raise ConfigError("a camera needs a source (rtsp://... URL or a file path)")
    if "://" not in source and not Path(source).is_file():
        raise ConfigError(f"source {source} is neither a URL nor an existing file")
    return source


# -- local: the KV bucket ----------------------------------------------------


async def put_camera(settings: Settings, spec: CameraSpec) -> None:
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        kv = await nc.jetstream(timeout=10.0).key_value(Names.CAMERAS_BUCKET)
        await kv.put(spec.name, spec.to_json())
    finally:
        await nc.close()


async def delete_camera(settings: Settings, name: str) -> bool:
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        kv = await nc.jetstream(timeout=10.0).key_value(Names.CAMERAS_BUCKET)
        try:
            await kv.get(name)
        except KeyNotFoundError:
            return False
        await kv.delete(name)
        return True
    finally:
        await nc.close()


async def list_cameras(settings: Settings) -> list[CameraSpec]:
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        kv = await nc.jetstream(timeout=10.0).key_value(Names.CAMERAS_BUCKET)
        try:
            keys = await kv.keys()
        except (NotFoundError, NoKeysError):  # nats-py: "no keys found" (either, by version)
            return []
        out = []
        for key in sorted(keys):
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                if entry.value:
                    out.append(CameraSpec.from_json(key, entry.value))
        return out
    finally:
        await nc.close()


class CameraWatch:
    """Follows the bucket in a thread; ``changes()`` returns what happened since the last call.

    Each (re)connection first yields a snapshot ``("snapshot", {name: spec})`` of
    every camera, then ``("put", spec)`` / ``("delete", name)`` as they come.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-watch", daemon=True)

    def start(self) -> CameraWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def changes(self) -> list[tuple[str, Any]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._watch())
            except Exception as exc:  # noqa: BLE001 - keep watching whatever went wrong
                log.warning("cameras.watch_failed", error=str(exc) or type(exc).__name__)
            self._stop.wait(1.0)

    async def _watch(self) -> None:
        try:  # NATS gone (the supervisor is shutting down): wait quietly, no reconnect loop
            socket.create_connection(self.settings.nats.host_port, timeout=1.0).close()
        except OSError:
            return
        nc = await bus.connect(self.settings, "framepipe-camera-watch", retry_initial=False)
        try:
            kv = await nc.jetstream(timeout=10.0).key_value(Names.CAMERAS_BUCKET)
            watcher = await kv.watchall()
            snapshot: dict[str, CameraSpec] | None = {}
            while not self._stop.is_set():
                try:
                    entry = await watcher.updates(timeout=0.5)  # type: ignore[no-untyped-call]
                except Exception:  # noqa: BLE001 - nats TimeoutError: nothing new
                    if not nc.is_connected:
                        raise SetupError("lost the NATS connection") from None
                    continue
                if entry is None:  # end of the initial values
                    if snapshot is not None:
                        self.events.put(("snapshot", snapshot))
                        snapshot = None
                    continue
                deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                if snapshot is not None:
                    if deleted:
                        snapshot.pop(entry.key, None)
                    else:
                        snapshot[entry.key] = CameraSpec.from_json(entry.key, entry.value)
                elif deleted:
                    self.events.put(("delete", entry.key))
                else:
                    self.events.put(("put", CameraSpec.from_json(entry.key, entry.value)))
            await watcher.stop()  # type: ignore[no-untyped-call]
        finally:
            await nc.close()


# -- Kubernetes: a Deployment (+ Secret) per camera ---------------------------


def secret_name(camera: str) -> str:
    return f"framepipe-camera-{camera.lower().replace('_', '-')}"


def camera_objects(settings: Settings, cluster: Any, camera: str, source: str) -> tuple[Obj, Obj]:
    """(Deployment, Secret) of one camera; the Deployment is ``k8s/camera/``'s template."""
    from framepipe.pipeline.k8s import gateway_deployment
    from framepipe.pipeline.k8s_nats import labels

    validate_camera_name(camera)
    if not source:
        raise ConfigError("a camera needs a source (rtsp://... URL)")
    deployment = gateway_deployment(settings, cluster, camera, f"$({SOURCE_ENV})")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        *container["env"],
        {"name": SOURCE_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name(camera), "key": "url"}}},
    ]
    deployment["metadata"].setdefault("annotations", {})["framepipe.io/source"] = _redact(source)
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
            raise ConfigError("KUBECONFIG is not set: point it at the cluster to use (nothing was changed)")
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


# -- CLI ------------------------------------------------------------------------

app = typer.Typer(help="Add, remove and list cameras of the running system (or the cluster).")
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]
KubeOpt = Annotated[
    bool,
    typer.Option("--kubernetes", "-k", help="Act on the cluster (KUBECONFIG) instead of the local system."),
]


def _local_settings(config: Path | None) -> Settings:
    """The settings, pointed at the NATS of a running `framepipe run` when there is one."""
    settings = load_settings(config)
    runtime = Path(settings.local.state_dir) / "runtime.json"
    if runtime.is_file():
        settings = settings.replace(nats={"url": json.loads(runtime.read_text())["nats_url"]})
    try:  # fail in one line instead of the client's endless reconnect loop
        socket.create_connection(settings.nats.host_port, timeout=settings.nats.connect_timeout_s).close()
    except OSError:
        raise SetupError(
            f"no framepipe system is running (nothing at {settings.nats.url}, no {runtime}): "
            "start `framepipe run --source ...` first"
        ) from None
    return settings


def _kube(config: Path | None) -> tuple[Settings, Any, KubeCameras]:
    from framepipe.pipeline.k8s_cli import load

    settings, cluster = load(config)
    return settings, cluster, KubeCameras(cluster.k8s.namespace)


def _run(fn: Any) -> Any:
    try:
        return fn()
    except FramepipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (TimeoutError, OSError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Camera name (letters, digits, '_' or '-').")],
    source: Annotated[str, typer.Argument(help="rtsp://\\[user:pass@]host/path or a file.")],
    pacing: Annotated[str | None, typer.Option(help="realtime | fast (files only).")] = None,
    kubernetes: KubeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Start processing a camera now (the running system picks it up; no restart)."""

    def go() -> None:
        validate_camera_name(name)
        check_source(source)
        if kubernetes:
            settings, cluster, kube = _kube(config)
            kube.add(*camera_objects(settings, cluster, name, source))
        else:
            asyncio.run(put_camera(_local_settings(config), CameraSpec(name, source, pacing)))
        typer.echo(f"camera {name} added ({_redact(source)})")

    _run(go)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Camera name.")],
    kubernetes: KubeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Stop processing a camera (its gateway drains and exits)."""

    def go() -> None:
        validate_camera_name(name)
        if kubernetes:
            found = _kube(config)[2].remove(name)
        else:
            found = asyncio.run(delete_camera(_local_settings(config), name))
        if not found:
            raise ConfigError(f"no camera named {name}")
        typer.echo(f"camera {name} removed")

    _run(go)


@app.command("list")
def list_(kubernetes: KubeOpt = False, config: ConfigOpt = None) -> None:
    """The cameras (sources shown without credentials)."""

    def go() -> None:
        if kubernetes:
            for camera, source, ready in _kube(config)[2].list():
                typer.echo(f"{camera}\t{source}\t{ready}")
            return
        for spec in asyncio.run(list_cameras(_local_settings(config))):
            typer.echo(f"{spec.name}\t{_redact(spec.source)}\t{spec.pacing or ''}".rstrip())

    _run(go)


__all__ = [
    "CameraSpec",
    "CameraWatch",
    "KubeCameras",
    "app",
    "camera_objects",
    "delete_camera",
    "list_cameras",
    "put_camera",
]
