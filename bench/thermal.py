"""Cost of the fever attribute per face, against the dlib alignment of the same face.

- **per face**: :meth:`FeverAttribute.read` on one face sample (real dlib landmarks on a
  real portrait) with its thermal frames already decoded: region, homography, percentile.
- **per visible GOP**: decoding the paired thermal GOP (12 FFV1 gray16le 160×120 frames),
  done once per visible GOP and shared by its faces.
- **baseline**: ``FaceEmbedder.crop`` (dlib's 5-point alignment) of the same face, which
  the analysis stage pays per face anyway. Passes are interleaved (baseline, fever,
  baseline, ...) so both see the same load; the ratios are against it.

Run: ``python -m bench.thermal [--repeats N] [--out bench/results/thermal.json]``. Needs
``make face-photos`` and dlib.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, ratio, stats, write_result
from framepipe.core.messages import GopMessage
from framepipe.core.settings import Settings
from framepipe.media.gop import GopCutter
from framepipe.media.thermal import decode_thermal, write_thermal_clip
from framepipe.stages.analysis.attributes.base import FaceSample
from framepipe.stages.analysis.attributes.fever import FeverAttribute, ThermalFrames, frame_times
from framepipe.stages.analysis.embedder import FaceEmbedder, read_image
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params

PHOTO = Path(__file__).resolve().parent.parent / ".cache" / "face-photos" / "obama.jpg"
THERMAL_SIZE = (160, 120)


def thermal_gop(folder: Path) -> GopMessage:
    """One real FFV1 gray16le GOP: a 22 °C room and a 36.8 °C face where the portrait's face is."""
    width, height = THERMAL_SIZE
    frames = []
    rng = np.random.default_rng(0)
    for _ in range(12):
        scene = 22.0 + rng.normal(0, 0.05, (height, width))
        scene[int(height * 0.2) : int(height * 0.7), int(width * 0.3) : int(width * 0.7)] = 36.8
        frames.append(np.round((scene + 273.15) * 100).astype(np.uint16))
    path = write_thermal_clip(folder / "thermal.mkv", frames, 10)
    container, stream = open_input(str(path))
    with container:
        params = stream_params(stream)
        gop = next(
            iter(
                GopCutter(params.codec, params.extradata, params.time_base, 10.0).cut(
                    iter_packets(container, stream)
                )
            )
        )
    message = gop_message("bench-ir", gop, params)
    return message


def timed(call: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def measure(repeats: int = 50, passes: int = 5) -> dict[str, Any]:
    """The figures (``summary`` and the samples' stats); ``bench/attributes.py`` may call it."""
    embedder = FaceEmbedder()
    image = read_image(PHOTO)
    box = embedder.detect(image)[0]
    x1, y1, x2, y2 = (round(v) for v in box)
    shape = embedder.shape_predictor(image, embedder._dlib.rectangle(x1, y1, x2, y2))
    landmarks = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float32)
    height, width = image.shape[:2]
    homography = [THERMAL_SIZE[0] / width, 0, 0, 0, THERMAL_SIZE[1] / height, 0, 0, 0, 1]
    settings = Settings().replace(thermal={"homography": json.dumps({"bench-ir": homography})})
    with tempfile.TemporaryDirectory() as tmp:
        gop = thermal_gop(Path(tmp))
    attribute = FeverAttribute(settings)
    attribute.load()
    side = ThermalFrames("bench-ir", [gop], min(frame_times(gop).values()))  # face at its first frame
    side.frames()
    sample = FaceSample(0, 0.0, box, landmarks, np.zeros((150, 150, 3), np.uint8), (width, height))
    if not attribute.read([sample], side).present:
        raise SystemExit("the bench face got no reading: check the homography and the photo")

    baseline, fever, decode = [], [], []
    for _ in range(passes):
        baseline += timed(lambda: embedder.crop(image, box), repeats)
        fever += timed(lambda: attribute.read([sample], side), repeats)
        decode += timed(lambda: decode_thermal(gop), max(1, repeats // 5))
    baseline += timed(lambda: embedder.crop(image, box), repeats)
    summary = {
        "fever_read_ms_per_face_p50": round(stats(fever)["p50"], 3),
        "thermal_gop_decode_ms_p50": round(stats(decode)["p50"], 3),
        "dlib_align_ms_per_face_p50": round(stats(baseline)["p50"], 3),
        "fever_over_align": ratio(stats(fever)["p50"], stats(baseline)["p50"]),
        "decode_over_align": ratio(stats(decode)["p50"], stats(baseline)["p50"]),
    }
    return {
        "benchmark": "thermal",
        "params": {"repeats": repeats, "passes": passes, "thermal_size": list(THERMAL_SIZE)},
        "summary": summary,
        "fever_ms": stats(fever),
        "decode_ms": stats(decode),
        "align_ms": stats(baseline),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "thermal.json")
    args = parser.parse_args(argv)
    write_result(
        measure(args.repeats, args.passes),
        args.out,
        f"python -m bench.thermal --repeats {args.repeats} --passes {args.passes}",
    )


if __name__ == "__main__":
    main()
