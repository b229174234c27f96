"""The local camera registry: desired cameras in the NATS KV bucket ``FP_CAMERAS``.

Each entry is name → JSON ``{"source", "pacing"}``. ``framepipe cameras add|remove``
writes it; the supervisor of ``framepipe run`` watches it (:class:`CameraWatch`) and
spawns or stops one gateway process per camera, with no restart of anything else.
In a cluster, :mod:`framepipe.cluster.cameras` does the same with Deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError

from framepipe.core import bus
from framepipe.core.errors import ConfigError, SetupError
from framepipe.core.settings import Settings
from framepipe.core.sources import redact
from framepipe.core.topology import Names

log = structlog.get_logger("framepipe.cameras")
Obj = dict[str, Any]
SOURCE_ENV = "FRAMEPIPE_SOURCE_URL"
CAMERA_LABEL = "framepipe.io/camera"


@dataclass(frozen=True)
class CameraSpec:
    name: str
    source: str
    pacing: str | None = None
    #: a radiometric thermal camera: the visible camera it is paired with.
    thermal_of: str | None = None

    def to_json(self) -> bytes:
        record: dict[str, Any] = {"source": self.source, "pacing": self.pacing}
        if self.thermal_of:
            record["thermal_of"] = self.thermal_of
        return json.dumps(record).encode()

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> CameraSpec:
        data = json.loads(raw)
        return cls(name, str(data["source"]), data.get("pacing"), data.get("thermal_of") or None)


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


async def add_camera(settings: Settings, spec: CameraSpec, running: Collection[str] = ()) -> None:
    """Add ``spec``; adding it again with the same source is a no-op (its pacing may change).

    A camera that exists with another source is refused (ConfigError): its recording would
    mix two sources in one playlist. Removing it first and adding it again starts a new
    recording instead (the gateway marks the first GOP a discontinuity). A thermal camera is
    refused unless its visible partner is in the bucket (or is one of the ``running`` cameras
    `framepipe run --source` started) and has no thermal camera yet.
    """
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        kv = await js.key_value(Names.CAMERAS_BUCKET)
        try:
            entry = await kv.get(spec.name)
        except KeyNotFoundError:
            entry = None
        if spec.thermal_of:
            started = [CameraSpec(name, "") for name in running]
            check_thermal_pairing(spec, [*await _all_specs(js, kv), *started])
        if entry is not None and entry.value:
            current = CameraSpec.from_json(spec.name, entry.value)
            if current.source != spec.source:
                raise ConfigError(
                    f"camera {spec.name} already exists with source {redact(current.source)}: remove it "
                    f"first (`framepipe cameras remove {spec.name}`) or add the new source under another name"
                )
        await kv.put(spec.name, spec.to_json())
    finally:
        await nc.close()


def check_thermal_pairing(spec: CameraSpec, cameras: list[CameraSpec]) -> None:
    """A thermal camera needs its visible partner, which must be visible and have no other one."""
    by_name = {c.name: c for c in cameras}
    partner = by_name.get(spec.thermal_of or "")
    if spec.thermal_of == spec.name:
        raise ConfigError(f"camera {spec.name} cannot be its own thermal camera: name its visible camera")
    if partner is None:
        raise ConfigError(
            f"thermal camera {spec.name} has no visible partner: add camera {spec.thermal_of} first "
            f"(`framepipe cameras add {spec.thermal_of} URL`), then `--thermal-of {spec.thermal_of}`"
        )
    if partner.thermal_of:
        raise ConfigError(
            f"camera {partner.name} is itself a thermal camera (of {partner.thermal_of}): "
            "pair the thermal camera with a visible one"
        )
    other = next((c for c in cameras if c.thermal_of == partner.name and c.name != spec.name), None)
    if other is not None:
        raise ConfigError(
            f"camera {partner.name} already has thermal camera {other.name}: one thermal camera per "
            f"visible one (remove {other.name} first)"
        )


async def _all_specs(js: JetStreamContext, kv: Any) -> list[CameraSpec]:
    """Every camera in the bucket, by name (listed from the stream's subjects: ``bus.bucket_keys``)."""
    try:
        keys = await bus.bucket_keys(js, Names.CAMERAS_BUCKET)
    except NotFoundError:
        return []
    out = []
    for key in sorted(keys):
        with contextlib.suppress(KeyNotFoundError):  # a deleted key's marker
            entry = await kv.get(key)
            if entry.value:
                out.append(CameraSpec.from_json(key, entry.value))
    return out


async def delete_camera(settings: Settings, name: str) -> bool:
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        kv = await js.key_value(Names.CAMERAS_BUCKET)
        try:
            await kv.get(name)
        except KeyNotFoundError:
            return False
        paired = next((c.name for c in await _all_specs(js, kv) if c.thermal_of == name), None)
        if paired is not None:
            raise ConfigError(
                f"camera {name} has thermal camera {paired}: "
                f"remove it first (`framepipe cameras remove {paired}`)"
            )
        await kv.delete(name)
        return True
    finally:
        await nc.close()


async def list_cameras(settings: Settings) -> list[CameraSpec]:
    nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        return await _all_specs(js, await js.key_value(Names.CAMERAS_BUCKET))
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
