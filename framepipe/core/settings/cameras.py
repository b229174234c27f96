"""Cameras declared in the config file: a list kept in git, started by ``framepipe run`` and
rendered by ``framepipe k8s render`` (one gateway Deployment + Secret each).

.. code-block:: toml

    [[cameras]]
    name = "door"
    source = "rtsp://door.local/stream"
    mode = "overlay"          # optional: the camera's output mode ([output] mode otherwise)

    [[cameras]]
    name = "door-thermal"     # a radiometric thermal camera paired with "door"
    source = "rtsp://door-thermal.local/stream"
    thermal_of = "door"

    [cameras.yard]            # the same, as a table per camera
    source = "/srv/clips/yard.mp4"
    pacing = "realtime"

A record has the fields of ``framepipe cameras add`` (name, source, pacing, thermal_of) plus the output
mode of ``framepipe cameras mode``. Adding a field: one line in :class:`DeclaredCamera`, its
check in ``__post_init__`` (a reference to another camera, such as a thermal camera's
visible twin, is checked in :func:`declared_cameras` where all names are known).
Passwords in a source URL are refused: the file is meant for git; give the camera's
credentials through ``FRAMEPIPE_SOURCE_USERNAME``/``FRAMEPIPE_SOURCE_PASSWORD`` or add it
with ``framepipe cameras add`` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from framepipe.core.errors import ConfigError
from framepipe.core.settings.stages import OUTPUT_MODES
from framepipe.core.topology import validate_camera_name

#: the URL schemes a gateway reads (FFmpeg's inputs framepipe is tested with).
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https")
PACINGS = ("realtime", "fast")


@dataclass(frozen=True)
class DeclaredCamera:
    """One ``[[cameras]]`` entry."""

    name: str
    source: str
    pacing: str | None = None
    mode: str | None = None
    #: this is the radiometric thermal camera of that visible camera (``--thermal-of``).
    thermal_of: str | None = None

    def __post_init__(self) -> None:
        where = f"cameras.{self.name}"
        try:
            validate_camera_name(self.name)
        except ConfigError as exc:
            raise ConfigError(f"[[cameras]]: {exc}") from None
        check_source_url(where, self.source)
        if self.pacing is not None and self.pacing not in PACINGS:
            raise ConfigError(f"{where}.pacing must be one of {', '.join(PACINGS)}, got {self.pacing!r}")
        if self.mode is not None and self.mode not in OUTPUT_MODES:
            raise ConfigError(f"{where}.mode must be one of {', '.join(OUTPUT_MODES)}, got {self.mode!r}")

    @property
    def is_live(self) -> bool:
        return "://" in self.source


def check_source_url(where: str, source: str) -> None:
    """A URL the gateway can open (a known scheme and a host, no password) or a file path."""
    if not source.strip():
        raise ConfigError(f"{where}.source is empty: give an rtsp:// or http:// URL or a file path")
    if "://" not in source:
        return  # a file: whether it exists is checked where it is read (`framepipe run`)
    parts = urlsplit(source)
    if parts.scheme not in SOURCE_SCHEMES:
        raise ConfigError(
            f"{where}.source {parts.scheme}://... is not a source URL framepipe reads "
            f"({', '.join(s + '://' for s in SOURCE_SCHEMES)})"
        )
    try:
        host, password = parts.hostname, parts.password
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(f"{where}.source is not a valid URL ({exc})") from None
    if not host:
        raise ConfigError(f"{where}.source {parts.scheme}://{parts.netloc}{parts.path} has no host")
    if password:
        raise ConfigError(
            f"{where}.source has a password in it: the config file belongs in git; set "
            "FRAMEPIPE_SOURCE_USERNAME/FRAMEPIPE_SOURCE_PASSWORD or use `framepipe cameras add`"
        )


def _entries(raw: Any) -> list[tuple[str, Any]]:
    """``[[cameras]]`` (a list with ``name``) or ``[cameras.NAME]`` (tables by name)."""
    if isinstance(raw, list):
        found: list[tuple[str, Any]] = []
        for number, entry in enumerate(raw, 1):
            if not isinstance(entry, dict):
                raise ConfigError(f"[[cameras]] entry {number} must be a table")
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"[[cameras]] entry {number} has no name")
            found.append((name, {k: v for k, v in entry.items() if k != "name"}))
        return found
    if isinstance(raw, dict):
        if any(not isinstance(v, dict) for v in raw.values()):
            raise ConfigError("[cameras] must be [[cameras]] entries or [cameras.NAME] tables")
        return list(raw.items())
    raise ConfigError("cameras must be [[cameras]] entries or [cameras.NAME] tables")


def declared_cameras(raw: Any) -> tuple[DeclaredCamera, ...]:
    """The config's cameras, checked: each field, and no name twice (one line per problem)."""
    if raw is None:
        return ()
    known = {f.name for f in dataclasses.fields(DeclaredCamera)} - {"name"}
    cameras: list[DeclaredCamera] = []
    seen: dict[str, str] = {}  # Kubernetes object name (lower case, '-') → camera name
    for name, values in _entries(raw):
        if name in seen.values():
            raise ConfigError(f"camera {name} is declared twice in [[cameras]]: give each camera one entry")
        key = name.lower().replace("_", "-")
        if key in seen:
            raise ConfigError(
                f"cameras {seen[key]} and {name} would get the same Kubernetes name: rename one of them"
            )
        seen[key] = name
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting cameras.{name}.{unknown[0]} (known: {', '.join(sorted(known))})"
            )
        if "source" not in values:
            raise ConfigError(f"cameras.{name} has no source: give an rtsp:// or http:// URL or a file path")
        for key, value in values.items():
            if not isinstance(value, str):
                raise ConfigError(f"cameras.{name}.{key} must be a string, got {value!r}")
        cameras.append(DeclaredCamera(name, **values))
    _check_thermal_pairs(cameras)
    return tuple(cameras)


def _check_thermal_pairs(cameras: list[DeclaredCamera]) -> None:
    """Each ``thermal_of`` names another declared, visible camera that has no other thermal one."""
    by_name = {c.name: c for c in cameras}
    partners: dict[str, str] = {}
    for camera in cameras:
        if camera.thermal_of is None:
            continue
        where = f"cameras.{camera.name}.thermal_of"
        partner = by_name.get(camera.thermal_of)
        if camera.thermal_of == camera.name:
            raise ConfigError(f"{where}: a camera cannot be its own thermal camera; name its visible camera")
        if partner is None:
            raise ConfigError(
                f"{where}: no camera {camera.thermal_of} is declared; declare the visible camera too"
            )
        if partner.thermal_of is not None:
            raise ConfigError(
                f"{where}: {partner.name} is itself a thermal camera; pair it with a visible one"
            )
        if camera.thermal_of in partners:
            raise ConfigError(
                f"{where}: {camera.thermal_of} already has thermal camera {partners[camera.thermal_of]}; "
                "one thermal camera per visible one"
            )
        partners[camera.thermal_of] = camera.name
