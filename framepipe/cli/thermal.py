"""``framepipe thermal calibrate``: the visible → thermal homography from 4 point pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from framepipe.cli.errors import Typer
from framepipe.core.errors import ConfigError
from framepipe.core.settings.thermal import parse_homography
from framepipe.core.topology import validate_camera_name
from framepipe.media.thermal import fit_homography, map_points

app = Typer(help="Register thermal cameras to their visible partners (fever screening).")


def parse_pair(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"x,y=u,v"``: a point in the visible image and the same point in the thermal image."""
    try:
        visible, thermal = text.split("=")
        x, y = (float(v) for v in visible.split(","))
        u, v = (float(v) for v in thermal.split(","))
    except ValueError:
        raise ConfigError(
            f"point pair {text!r} must be 'x,y=u,v' (visible pixel = thermal pixel), e.g. 120,80=31,20"
        ) from None
    return (x, y), (u, v)


def parse_size(option: str, text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{option} must be WIDTHxHEIGHT in pixels, e.g. 640x480, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ConfigError(f"{option} must be positive, got {text!r}")
    return width, height


def check_inside(matrix: np.ndarray, visible_size: tuple[int, int], thermal_size: tuple[int, int]) -> None:
    """Refuse a homography that sends the middle of the visible image outside the thermal frame."""
    width, height = visible_size
    centre = map_points(matrix, np.array([[width / 2.0, height / 2.0]]))[0]
    if not np.isfinite(centre).all() or not (
        0 <= centre[0] < thermal_size[0] and 0 <= centre[1] < thermal_size[1]
    ):
        raise ConfigError(
            f"the homography maps the visible image's centre to {centre.round(1).tolist()}, outside the "
            f"{thermal_size[0]}x{thermal_size[1]} thermal frame: check the point pairs (same order in both)"
        )


@app.command("calibrate")
def calibrate(
    camera: Annotated[str, typer.Argument(help="The thermal camera (as in `cameras add ... --thermal-of`).")],
    pairs: Annotated[
        list[str],
        typer.Argument(help="4 pairs 'x,y=u,v': a visible pixel and the same spot in the thermal image."),
    ],
    thermal_size: Annotated[
        str | None, typer.Option(help="WIDTHxHEIGHT of the thermal image: the points must lie inside.")
    ] = None,
    visible_size: Annotated[
        str | None,
        typer.Option(help="WIDTHxHEIGHT of the visible image: its centre must map into the thermal one."),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="Also write the TOML lines to this new file (never overwritten).")
    ] = None,
) -> None:
    """Compute the visible → thermal homography from 4 point pairs and print its config lines."""
    validate_camera_name(camera)
    if len(pairs) != 4:
        raise ConfigError(f"calibration needs exactly 4 point pairs, got {len(pairs)}")
    parsed = [parse_pair(p) for p in pairs]
    if thermal_size:
        width, height = parse_size("--thermal-size", thermal_size)
        for _, (u, v) in parsed:
            if not (0 <= u < width and 0 <= v < height):
                raise ConfigError(f"thermal point {u:g},{v:g} is outside the {width}x{height} thermal image")
    matrix = fit_homography([v for v, _ in parsed], [t for _, t in parsed])
    if thermal_size and visible_size:
        check_inside(
            matrix, parse_size("--visible-size", visible_size), parse_size("--thermal-size", thermal_size)
        )
    flat = [round(float(v), 9) + 0.0 for v in matrix.ravel()]  # + 0.0: no "-0.0" in the config
    parse_homography(f"thermal.homography.{camera}", flat)  # what the settings will accept
    lines = f"[thermal.homography]\n{camera} = {json.dumps(flat)}\n"
    typer.echo(lines, nl=False)
    typer.echo(f"# or: FRAMEPIPE_THERMAL__HOMOGRAPHY='{json.dumps({camera: flat})}'")
    if save is not None:
        if save.exists():
            raise ConfigError(f"{save} exists: give a new file (the lines above go into your config)")
        save.write_text(lines)
        typer.echo(f"# written to {save}")
