"""The one way settings are read: one TOML reader, one coercion engine, one precedence.

Defaults ← a TOML file (``--config`` or ``FRAMEPIPE_CONFIG``) ← environment
variables ``FRAMEPIPE_<SECTION>__<FIELD>``. The file's ``[k8s]`` and
``[scaling.<stage>]`` tables build :class:`ClusterConfig`; every other table
builds a section of :class:`Settings`. Values from the environment are text and
are parsed; values from TOML are typed and must already have the field's type
(an int where a float is wanted is fine, a string where an int is wanted is not).
Every failure is one :class:`ConfigError` line naming the field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framepipe.core.cluster_settings import ClusterConfig, K8sSettings, StageScaling, WorkloadResources
from framepipe.core.errors import ConfigError
from framepipe.core.settings import CLUSTER_SECTIONS, ENV_PREFIX, Settings
from framepipe.core.settings.cameras import declared_cameras

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Config:
    """Everything one config file (plus the environment) says."""

    settings: Settings = field(default_factory=Settings)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


class _Text(str):
    """A value that came from the environment: parsed into the field's type."""


def coerce(where: str, kind: Any, raw: Any) -> Any:
    """``raw`` as a value of ``kind`` (bool, int, float, str or a Literal of strings)."""
    text = isinstance(raw, _Text)
    if typing.get_origin(kind) is Literal:
        kind = str  # the dataclass checks the allowed values with its own message
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(f"{where} must be true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if text:
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {raw!r}")
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if text:
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {raw!r}")
    if kind is str:
        if isinstance(raw, str):
            return str(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return str(raw)  # e.g. preset = 5 in TOML
        raise ConfigError(f"{where} must be a string, got {raw!r}")
    raise ConfigError(f"{where} has an unsupported type {kind!r}")


def build(where: str, cls: type[Any], values: Any) -> Any:
    """An instance of dataclass ``cls`` from a table; nested dataclasses are nested tables.
    A class with ``from_table`` (a table of one value per stage) builds itself."""
    from_table = getattr(cls, "from_table", None)
    if from_table is not None:
        return from_table(where, values, build)
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    built: dict[str, Any] = {}
    for key, raw in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            built[key] = build(f"{where}.{key}", typing.cast(type[Any], kind), raw)
        else:
            built[key] = coerce(f"{where}.{key}", kind, raw)
    return cls(**built)


def read_toml(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


def config_path(path: str | Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: the one given, else ``FRAMEPIPE_CONFIG``, else none."""
    env = os.environ if env is None else env
    chosen = path or env.get(f"{ENV_PREFIX}CONFIG")
    return Path(chosen) if chosen else None


def settings_from(tables: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """:class:`Settings` from parsed TOML tables (cluster tables skipped) and the environment."""
    raw: dict[str, dict[str, Any]] = {}
    for section, values in tables.items():
        if section in CLUSTER_SECTIONS:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config file: [{section}] must be a table")
        raw[section] = dict(values)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})[name] = _Text(value)
    hints = typing.get_type_hints(Settings)
    sections = [f.name for f in dataclasses.fields(Settings)]
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}] (known: {', '.join(sections)})")
    return Settings(**{name: build(name, hints[name], values) for name, values in raw.items()})


def cluster_config_from_tables(k8s: Any, scaling: Any, cameras: Any = None) -> ClusterConfig:
    """:class:`ClusterConfig` from the ``[k8s]``, ``[scaling]`` and ``[[cameras]]`` tables of a file."""
    k8s = {} if k8s is None else k8s
    if not isinstance(k8s, dict):
        raise ConfigError("[k8s] must be a table")
    k8s = dict(k8s)
    resources = k8s.pop("resources", {})
    return ClusterConfig(
        k8s=build("k8s", K8sSettings, k8s),
        resources=build("k8s.resources", WorkloadResources, resources),
        scaling=build("scaling", StageScaling, {} if scaling is None else scaling),
        cameras=declared_cameras(cameras),
    )


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Settings and cluster tables of one file (``path`` or ``FRAMEPIPE_CONFIG``), env on top."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    tables = read_toml(file) if file is not None else {}
    return Config(
        settings_from(tables, env),
        cluster_config_from_tables(tables.get("k8s"), tables.get("scaling"), tables.get("cameras")),
    )


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults ← TOML file ← environment. Raises :class:`ConfigError`."""
    return load_config(path, env).settings


def load_cluster_config(path: str | Path | None = None) -> ClusterConfig:
    """Defaults ← the ``[k8s]``/``[scaling.*]`` tables of a TOML file (other tables ignored)."""
    if path is None:
        return ClusterConfig()
    tables = read_toml(path)
    return cluster_config_from_tables(tables.get("k8s"), tables.get("scaling"), tables.get("cameras"))
