"""Cameras of the FP_CAMERAS bucket (`framepipe cameras add/remove`): a gateway each."""

from __future__ import annotations

import signal
import subprocess
from typing import Protocol

import structlog

from framepipe.core.settings import Settings
from framepipe.core.sources import is_live, redact
from framepipe.local.cameras import CameraSpec, CameraWatch
from framepipe.local.processes import Managed

log = structlog.get_logger("framepipe.supervisor")


class CameraHost(Protocol):
    """What the camera sync reads and changes of the local system (supervisor.LocalSystem)."""

    settings: Settings
    stopping: bool
    processes: list[Managed]
    camera_watch: CameraWatch | None
    kv_cameras: dict[str, tuple[CameraSpec, Managed]]

    def add_camera(
        self,
        camera: str,
        source: str,
        pacing: str | None = None,
        *,
        once: bool = False,
        thermal_of: str | None = None,
    ) -> Managed: ...

    def _write_runtime(self) -> None: ...


def sync_cameras(system: CameraHost) -> None:
    """Spawn a gateway for each added camera, stop the removed ones (no restart)."""
    watch = system.camera_watch
    if watch is None or system.stopping:
        return
    for kind, value in watch.changes():
        if kind == "snapshot":
            for name in set(system.kv_cameras) - set(value):
                stop_camera(system, name)
            specs = list(value.values())
        elif kind == "delete":
            stop_camera(system, value)
            specs = []
        else:
            specs = [value]
        for spec in specs:
            assert isinstance(spec, CameraSpec)
            current = system.kv_cameras.get(spec.name)
            if current is not None and current[0] == spec:
                continue
            if current is None and any(m.name == f"gateway-{spec.name}" for m in system.processes):
                log.warning("camera.ignored", camera=spec.name, why="a gateway of that name already runs")
                continue
            stop_camera(system, spec.name)
            managed = system.add_camera(spec.name, spec.source, spec.pacing, thermal_of=spec.thermal_of)
            managed.restart = is_live(spec.source)  # a live camera is restarted if it crashes
            system.kv_cameras[spec.name] = (spec, managed)
            pid = managed.process.pid if managed.process else None
            log.info("camera.added", camera=spec.name, source=redact(spec.source), pid=pid)


def stop_camera(system: CameraHost, name: str) -> None:
    entry = system.kv_cameras.pop(name, None)
    if entry is None:
        return
    managed = entry[1]
    managed.restart = False
    if managed.process is not None and managed.alive:
        managed.process.send_signal(signal.SIGTERM)
        try:
            managed.process.wait(system.settings.local.shutdown_grace_s)
        except subprocess.TimeoutExpired:
            managed.process.kill()
            managed.process.wait()
    if managed in system.processes:
        system.processes.remove(managed)
    system._write_runtime()
    log.info("camera.removed", camera=name)
