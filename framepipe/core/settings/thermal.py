"""``[thermal]``: radiometric thermal cameras paired with visible ones, and fever screening.

A thermal camera (``framepipe cameras add NAME URL --thermal-of VISIBLE``) sends 16-bit
frames whose values map linearly to temperature: ``T_C = value * scale + offset``
(FLIR's TLinear centikelvin by default: 0.01 K per count, minus 273.15). Its
registration to the visible camera is a 3×3 homography per thermal camera, mapping
visible pixels to thermal pixels (``framepipe thermal calibrate`` computes one)::

    [thermal.homography]
    lobby-ir = [0.25, 0.0, 0.0,  0.0, 0.25, 0.0,  0.0, 0.0, 1.0]

It is kept as canonical JSON text so that it travels through the environment
(``FRAMEPIPE_THERMAL__HOMOGRAPHY='{"lobby-ir": [...]}'``) like every other setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from framepipe.core.errors import ConfigError
from framepipe.core.settings.bus import positive
from framepipe.core.topology import validate_camera_name

Matrix = tuple[float, float, float, float, float, float, float, float, float]


def parse_homography(where: str, raw: Any) -> Matrix:
    """Nine finite numbers (row-major, or three rows of three) of a non-singular 3×3 matrix."""
    flat = [v for row in raw for v in row] if raw and all(isinstance(r, list) for r in raw) else raw
    if (
        not isinstance(flat, list)
        or len(flat) != 9
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat)
        or not all(math.isfinite(v) for v in flat)
    ):
        raise ConfigError(f"{where} must be 9 finite numbers (a 3x3 matrix, row by row), got {raw!r}"[:300])
    a, b, c, d, e, f, g, h, i = (float(v) for v in flat)
    determinant = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if abs(determinant) < 1e-12 or abs(i) < 1e-12:
        raise ConfigError(
            f"{where} is singular (determinant {determinant:.3g}): "
            "recompute it with `framepipe thermal calibrate`"
        )
    return (a / i, b / i, c / i, d / i, e / i, f / i, g / i, h / i, 1.0)


@dataclass(frozen=True)
class _ThermalFields:
    #: temperature in °C = raw 16-bit value × scale + offset (TLinear centikelvin by default).
    scale: float = 0.01
    offset: float = -273.15
    #: a track whose smoothed temperature reaches this raises ``alert.fever``, once per track.
    fever_c: float = 37.5
    #: a track counts as hot from ``fever_c`` until it cools below ``fever_c - hysteresis_c``.
    hysteresis_c: float = 0.5
    #: exponential smoothing of a track's readings across GOPs: 0 none, 0.9 slow.
    smoothing: float = 0.5
    #: the percentile of the inner-canthus/forehead region taken as its temperature (100: max).
    percentile: float = 98.0
    #: a visible frame is read on the thermal frame nearest in capture time, at most this far.
    max_skew_s: float = 0.25
    #: readings are refused (no reading) when the scene (the thermal frame's median) is
    #: outside this range: screening is calibrated for indoor ambient temperatures.
    ambient_min_c: float = 15.0
    ambient_max_c: float = 32.0
    #: an ambient reference (a blackbody) in the thermal image: "x1,y1,x2,y2" in thermal
    #: pixels, at ``reference_c``; every reading is shifted by (reference_c - its measured
    #: median). Empty: off.
    reference_box: str = ""
    reference_c: float = 35.0
    #: visible → thermal homography per thermal camera, canonical JSON {camera: [9 numbers]}.
    homography: str = "{}"


@dataclass(frozen=True)
class ThermalSettings(_ThermalFields):
    """Thermal cameras and fever screening (the ``fever`` face attribute)."""

    def __post_init__(self) -> None:
        positive("thermal", scale=abs(self.scale), max_skew_s=self.max_skew_s)
        if self.hysteresis_c < 0:
            raise ConfigError(f"thermal.hysteresis_c must be >= 0, got {self.hysteresis_c}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"thermal.smoothing must be in [0, 1), got {self.smoothing}")
        if not 50.0 <= self.percentile <= 100.0:
            raise ConfigError(f"thermal.percentile must be in [50, 100], got {self.percentile}")
        if self.ambient_min_c >= self.ambient_max_c:
            raise ConfigError("thermal.ambient_min_c must be below thermal.ambient_max_c")
        self.reference()
        self.homographies()

    @classmethod
    def from_table(cls, where: str, table: Any, build: Callable[[str, type[Any], Any], Any]) -> Self:
        """The TOML table ``[thermal.homography]`` (camera → matrix) becomes its JSON text."""
        if not isinstance(table, dict):
            raise ConfigError(f"[{where}] must be a table")
        values = dict(table)
        if isinstance(values.get("homography"), dict):
            values["homography"] = json.dumps(values["homography"], sort_keys=True)
        fields = build(where, _ThermalFields, values)
        return cls(**{f.name: getattr(fields, f.name) for f in dataclasses.fields(_ThermalFields)})

    def homographies(self) -> dict[str, Matrix]:
        """The visible → thermal homography of each thermal camera that has one."""
        try:
            raw = json.loads(self.homography)
        except json.JSONDecodeError:
            raise ConfigError(
                "thermal.homography must be a table of camera = [9 numbers] (JSON text in the environment)"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError("thermal.homography must be a table of camera = [9 numbers]")
        return {
            validate_camera_name(camera): parse_homography(f"thermal.homography.{camera}", matrix)
            for camera, matrix in raw.items()
        }

    def reference(self) -> tuple[int, int, int, int] | None:
        """The ambient reference's box in thermal pixels, or None (off)."""
        if not self.reference_box.strip():
            return None
        try:
            x1, y1, x2, y2 = (int(v) for v in self.reference_box.split(","))
        except ValueError:
            raise ConfigError(
                f"thermal.reference_box must be 'x1,y1,x2,y2' in thermal pixels, got {self.reference_box!r}"
            ) from None
        if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
            raise ConfigError(f"thermal.reference_box {self.reference_box!r} is empty or negative")
        return x1, y1, x2, y2

    def celsius(self, value: float) -> float:
        return value * self.scale + self.offset
