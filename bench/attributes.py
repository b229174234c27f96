"""Face-attribute costs: per face per attribute, and the analysis stage with attributes on vs off.

- **per face**: each attribute's ``read`` on one tracklet's aligned crops
  (``analysis.crops_per_track`` of them, cut by the stage from a real 720p GOP), in ms
  per face, next to the stage's own per-face work (alignment + descriptor) measured in
  the same passes.
- **stage on vs off**: the analysis stage's work on one real 1-second 720p GOP with 5
  faces (tracklets, decode, align, embed, summarise), without attributes and with both
  ``mask`` and ``fever`` on, interleaved (off, on, off, ...) so both see the same machine
  load; the ratio is on-throughput over off-throughput. Fever's side input is the real
  FFV1 gray16le thermal GOP of :mod:`bench.thermal` (decoded per GOP, inside fever's
  cost), mapped onto the 720p frame by a scaling homography.

Run: ``python -m bench.attributes [--repeats N] [--out bench/results/attributes.json]``.
Needs ``make models`` (the mask baseline) and ``make face-photos``.
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

from bench.common import RESULTS, bench_settings, interleaved, ratio, stats, write_result
from bench.faces import gop_with_faces
from framepipe.core.messages import FrameDetections, GopMessage
from framepipe.core.settings import Settings
from framepipe.stages.analysis.embedder import FaceEmbedder
from framepipe.stages.analysis.reading import Gathered
from framepipe.stages.analysis.stage import Analysis
from framepipe.stages.analysis.tracklets import choose_crops, link


def _stage(settings: Settings) -> Analysis:
    analysis = Analysis(settings)
    analysis._embedder = FaceEmbedder()
    analysis.attributes.load()
    return analysis


def _work(
    analysis: Analysis,
    gop: GopMessage,
    dets: tuple[FrameDetections, ...],
    side: Callable[[str], Any] = lambda name: None,
) -> float:
    """What ``Analysis.process`` computes for a GOP, without the bus (seconds); ``side``
    gives each attribute's side input (what ``gather`` fetched)."""
    cfg = analysis.settings.analysis
    started = time.perf_counter()
    tracks = link(dets, cfg.track_iou)
    wanted = {t.local: c for t in tracks if (c := choose_crops(t, cfg.crops_per_track, cfg.min_face_px))}
    embedded = analysis.embed(gop, wanted) if wanted else {}
    switched_on = analysis.attributes.for_camera(gop.camera)
    readings = {}
    if switched_on and embedded:
        gathered = [Gathered(a, side(a.name)) for a in switched_on]
        samples = {local: e.samples(gop) for local, e in embedded.items()}
        readings = analysis.attributes.read(gop.camera, gop.gop, gathered, samples)
    for t in tracks:
        analysis.summarise(t, embedded.get(t.local), gop, readings.get(t.local, ()))
    return time.perf_counter() - started


def readings_present(
    analysis: Analysis, gop: GopMessage, dets: tuple[FrameDetections, ...], side: Callable[[str], Any]
) -> dict[str, int]:
    """How many of the GOP's faces got a reading of each attribute (a cost of "no reading"
    would say little)."""
    cfg = analysis.settings.analysis
    tracks = link(dets, cfg.track_iou)
    wanted = {t.local: c for t in tracks if (c := choose_crops(t, cfg.crops_per_track, cfg.min_face_px))}
    embedded = analysis.embed(gop, wanted)
    gathered = [Gathered(a, side(a.name)) for a in analysis.attributes.for_camera(gop.camera)]
    samples = {local: e.samples(gop) for local, e in embedded.items()}
    readings = analysis.attributes.read(gop.camera, gop.gop, gathered, samples)
    names = [g.attribute.name for g in gathered]
    return {name: sum(any(r.name == name for r in rs) for rs in readings.values()) for name in names}


def fever_side(settings: Settings, folder: Path) -> tuple[Settings, Callable[[str], Any]]:
    """Settings with a homography from the 720p frame onto bench.thermal's 160×120 thermal GOP,
    and a side-input maker: fresh ThermalFrames per GOP, so its decode is paid per GOP."""
    from bench.thermal import THERMAL_SIZE, thermal_gop
    from framepipe.stages.analysis.attributes.fever import ThermalFrames, frame_times

    homography = [THERMAL_SIZE[0] / 1280, 0, 0, 0, THERMAL_SIZE[1] / 720, 0, 0, 0, 1]
    thermal = thermal_gop(folder)
    start = min(frame_times(thermal).values())

    def side(name: str) -> Any:
        return ThermalFrames("bench-ir", [thermal], start) if name == "fever" else None

    return settings.replace(thermal={"homography": json.dumps({"bench-ir": homography})}), side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "attributes.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base, side = fever_side(bench_settings(), Path(tmp))
    names = ["mask", "fever"]
    off = _stage(base)
    on = _stage(base.replace(analysis={"attributes": ",".join(names)}))
    gop, dets = gop_with_faces(5)
    read_by = readings_present(on, gop, dets, side)
    faces = sum(1 for _ in link(dets, base.analysis.track_iou))

    def run_off() -> dict[str, Any]:
        return {"seconds": _work(off, gop, dets)}

    def run_on(_: int) -> dict[str, Any]:
        before = dict(on.attributes.cost.seconds)
        seconds = _work(on, gop, dets, side)
        spent = {n: on.attributes.cost.seconds[n] - before.get(n, 0.0) for n in on.attributes.cost.seconds}
        return {"seconds": seconds, "attributes": spent}

    passes, runs = interleaved(args.repeats, run_off, run_on)
    off_s = [p["seconds"] for p in passes]
    on_s = [r["seconds"] for r in runs]
    paired = [ratio((off_s[i] + off_s[i + 1]) / 2, s) for i, s in enumerate(on_s)]
    per_face = {name: stats([1000 * r["attributes"].get(name, 0.0) / faces for r in runs]) for name in names}
    stage_per_face = stats([1000 * s / faces for s in off_s])
    result = {
        "benchmark": "attributes",
        "params": {"resolution": "1280x720", "faces": faces, "repeats": args.repeats, "attributes": names,
                   "crops_per_track": base.analysis.crops_per_track},
        "per_face_ms": per_face,
        "stage_ms_per_face_without_attributes": stage_per_face,
        "stage_ms_per_gop": {"off": stats([1000 * s for s in off_s]), "on": stats([1000 * s for s in on_s])},
        "summary": {
            **{f"{n}_ms_per_face": v["p50"] for n, v in per_face.items()},
            "stage_ms_per_face_off": stage_per_face["p50"],
            "on_vs_off_throughput": float(np.median(paired)),
            "paired": paired,
            "faces_with_a_reading": read_by,
        },
    }  # fmt: skip
    write_result(result, args.out, "python -m bench.attributes " + " ".join(argv or []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
