"""Load curves: cameras over time, from CSV (``t_s``/``hour``, ``cameras``) or TOML."""

from __future__ import annotations

import bisect
import csv
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepipe.core.errors import ConfigError


@dataclass(frozen=True)
class LoadCurve:
    """Cameras over time, stepwise: ``points[i]`` holds until the next point's time."""

    points: tuple[tuple[float, float], ...]
    duration_s: float
    fps: float = 30.0
    gop_frames: int = 30
    name: str = "curve"

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError(f"load curve {self.name}: no points")
        times = [t for t, _ in self.points]
        if times != sorted(times) or times[0] != 0:
            raise ConfigError(f"load curve {self.name}: times must start at 0 and increase")
        if any(c < 0 for _, c in self.points):
            raise ConfigError(f"load curve {self.name}: camera counts must be >= 0")
        if self.duration_s <= times[-1]:
            raise ConfigError(f"load curve {self.name}: duration_s must be after the last point")
        if self.fps <= 0 or self.gop_frames < 1:
            raise ConfigError(f"load curve {self.name}: fps must be > 0 and gop_frames >= 1")

    def cameras(self, t: float) -> float:
        index = bisect.bisect_right(self.times, t) - 1
        return self.points[max(0, index)][1]

    @functools.cached_property
    def times(self) -> list[float]:
        return [t for t, _ in self.points]

    @property
    def peak(self) -> float:
        return max(c for _, c in self.points)

    @property
    def gops_per_camera_s(self) -> float:
        return self.fps / self.gop_frames


def _number(where: str, raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {raw!r}") from None


def load_curve(path: str | Path) -> LoadCurve:
    """A curve from CSV (``t_s,cameras``, or ``hour,cameras``; ``#`` comments; optional
    ``# fps=…``/``# gop_frames=…``/``# duration_s=…`` lines) or TOML (``fps``,
    ``gop_frames``, ``duration_s`` and ``[[point]] t_s = …, cameras = …``)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"load curve {file} does not exist")
    options: dict[str, float] = {}
    points: list[tuple[float, float]] = []
    if file.suffix == ".toml":
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"load curve {file} is not valid TOML: {exc}") from None
        for key in ("fps", "gop_frames", "duration_s"):
            if key in data:
                options[key] = _number(f"{file}: {key}", data[key])
        for i, point in enumerate(data.get("point", [])):
            t = point["t_s"] if "t_s" in point else _number(f"{file}: point {i}", point.get("hour")) * 3600
            points.append(
                (_number(f"{file}: point {i} t_s", t), _number(f"{file}: point {i}", point.get("cameras")))
            )
    else:
        lines = file.read_text().splitlines()
        for line in lines:
            if line.startswith("#") and "=" in line:
                key, _, value = line.lstrip("# ").partition("=")
                if key.strip() in ("fps", "gop_frames", "duration_s"):
                    options[key.strip()] = _number(f"{file}: {key.strip()}", value.strip())
        rows = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
        for n, row in enumerate(rows, start=2):
            if "t_s" in row:
                t = _number(f"{file}:{n} t_s", row["t_s"])
            elif "hour" in row:
                t = _number(f"{file}:{n} hour", row["hour"]) * 3600
            else:
                raise ConfigError(f"{file}: needs a t_s or hour column (got {', '.join(row)})")
            points.append((t, _number(f"{file}:{n} cameras", row.get("cameras"))))
    if not points:
        raise ConfigError(f"load curve {file} has no points")
    duration = options.get("duration_s", points[-1][0] + 3600)
    return LoadCurve(
        tuple(points),
        duration,
        fps=options.get("fps", 30.0),
        gop_frames=int(options.get("gop_frames", 30)),
        name=file.stem,
    )


# -- the model --------------------------------------------------------------
