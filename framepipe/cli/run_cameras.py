"""The cameras of one ``framepipe run``: its ``--source`` and the config's ``[[cameras]]``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from framepipe.core import bus
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.settings.cameras import DeclaredCamera

LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://")


@dataclass(frozen=True)
class RunCamera:
    """A camera this run starts a gateway for (``declared``: from the config file)."""

    name: str
    source: str
    pacing: str | None = None
    mode: str | None = None
    declared: bool = False
    thermal_of: str | None = None


def check_source_exists(source: str, who: str = "source") -> None:
    """A file source exists and is no folder; URLs are checked by opening them."""
    if Path(source).is_dir():
        raise ConfigError(f"{who} {source} is a directory: give a video file or an rtsp:// or http:// URL")
    if not (source.startswith(LIVE_PREFIXES) or Path(source).is_file()):
        raise ConfigError(f"{who} {source} does not exist")


def run_cameras(
    camera: str, source: str | None, pacing: str | None, declared: tuple[DeclaredCamera, ...]
) -> list[RunCamera]:
    """``--source`` (if given) first, then the declared cameras; refused in one line if none,
    if a declared file is missing, or if ``--camera`` is also a declared camera's name."""
    cameras: list[RunCamera] = []
    if source is not None:
        check_source_exists(source)
        if any(d.name == camera for d in declared):
            raise ConfigError(
                f"camera {camera} is declared in the config's [[cameras]] too: choose another --camera"
            )
        cameras.append(RunCamera(camera, source, pacing))
    for entry in declared:
        check_source_exists(entry.source, f"camera {entry.name}: source")
        cameras.append(
            RunCamera(
                entry.name,
                entry.source,
                entry.pacing or pacing,
                entry.mode,
                declared=True,
                thermal_of=entry.thermal_of,
            )
        )
    if not cameras:
        raise ConfigError("nothing to run: give --source FILE|URL, or declare [[cameras]] in the config (-c)")
    return cameras


async def _set_modes(settings: Settings, cameras: list[RunCamera]) -> None:
    from framepipe.stages.output_modes import set_mode

    nc = await bus.connect(settings, "framepipe-run-cameras", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        for camera in cameras:
            await set_mode(js, camera.name, camera.mode)  # None: [output] mode
    finally:
        await nc.close()


def apply_modes(settings: Settings, cameras: list[RunCamera]) -> None:
    """Each declared camera's output mode, before its first GOP (as `cameras mode` sets it)."""
    if any(camera.mode for camera in cameras):
        asyncio.run(_set_modes(settings, [c for c in cameras if c.mode]))
