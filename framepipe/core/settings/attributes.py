"""Which face attributes (``analysis.attributes``) run on which camera.

Both settings are text so that TOML, the environment and ``Settings.to_env`` (child
processes, pods) carry them alike:

- ``analysis.attributes = "mask"``: the attributes of every camera (comma-separated;
  empty: none).
- ``analysis.camera_attributes = "lobby=mask,fever; garage="``: per-camera overrides,
  ``camera=list`` separated by ``;`` (an empty list switches a camera's attributes off).

Here only the syntax is checked: the names are checked against the attribute registry
by the analysis stage (``core`` knows no stage).
"""

from __future__ import annotations

import re

from framepipe.core.errors import ConfigError

ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def attribute_list(where: str, text: str) -> tuple[str, ...]:
    """``"mask, fever"`` → ``("mask", "fever")``; a one-line ConfigError on a bad name."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not ATTRIBUTE_NAME.match(name):
            raise ConfigError(
                f"{where}: {name!r} is not an attribute name (lower-case letters, digits, _), "
                'e.g. attributes = "mask"'
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{where} names an attribute twice: {text!r}")
    return names


def camera_attribute_lists(text: str) -> dict[str, tuple[str, ...]]:
    """``"lobby=mask,fever; garage="`` → ``{"lobby": ("mask", "fever"), "garage": ()}``."""
    where = "analysis.camera_attributes"
    out: dict[str, tuple[str, ...]] = {}
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        camera, sep, names = entry.partition("=")
        camera = camera.strip()
        if not sep or not camera:
            raise ConfigError(
                f'{where}: {entry!r} is not camera=attributes; write e.g. "lobby=mask,fever; garage="'
            )
        if camera in out:
            raise ConfigError(f"{where} names camera {camera!r} twice")
        out[camera] = attribute_list(f"{where} ({camera})", names)
    return out
