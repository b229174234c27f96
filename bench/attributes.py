"""Face-attribute costs: per face per attribute, and the analysis stage with attributes on vs off.

- **per face**: each attribute's ``read`` on one tracklet's aligned crops
  (``analysis.crops_per_track`` of them, cut by the stage from a real 720p GOP), in ms
  per face, next to the stage's own per-face work (alignment + descriptor) measured in
  the same passes.
- **stage on vs off**: the analysis stage's work on one real 1-second 720p GOP with 5
  faces (tracklets, decode, align, embed, summarise), without attributes and with every
  attribute that loads without a side input, interleaved (off, on, off, ...) so both see
  the same machine load; the ratio is on-throughput over off-throughput.

Run: ``python -m bench.attributes [--repeats N] [--out bench/results/attributes.json]``.
Needs ``make models`` (the mask baseline) and ``make face-photos``.
"""

from __future__ import annotations

import argparse
import time
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


def _work(analysis: Analysis, gop: GopMessage, dets: tuple[FrameDetections, ...]) -> float:
    """What ``Analysis.process`` computes for a GOP, without the bus (seconds)."""
    cfg = analysis.settings.analysis
    started = time.perf_counter()
    tracks = link(dets, cfg.track_iou)
    wanted = {t.local: c for t in tracks if (c := choose_crops(t, cfg.crops_per_track, cfg.min_face_px))}
    embedded = analysis.embed(gop, wanted) if wanted else {}
    switched_on = analysis.attributes.for_camera(gop.camera)
    readings = {}
    if switched_on and embedded:
        gathered = [Gathered(a) for a in switched_on]
        samples = {local: e.samples(gop) for local, e in embedded.items()}
        readings = analysis.attributes.read(gop.camera, gop.gop, gathered, samples)
    for t in tracks:
        analysis.summarise(t, embedded.get(t.local), gop, readings.get(t.local, ()))
    return time.perf_counter() - started


def loadable(settings: Settings) -> list[str]:
    """Attributes that load and read without a side input on this machine."""
    from framepipe.stages.analysis.attributes import registry

    names = []
    for name, cls in sorted(registry().items()):
        if "gather" in vars(cls):
            continue  # needs a side input (e.g. a paired thermal camera): not measurable here
        try:
            cls(settings).load()
        except Exception:  # noqa: BLE001 - a missing model: left out and said so
            continue
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "attributes.json")
    args = parser.parse_args(argv)
    base = bench_settings()
    names = loadable(base)
    off = _stage(base)
    on = _stage(base.replace(analysis={"attributes": ",".join(names)}))
    gop, dets = gop_with_faces(5)
    faces = sum(1 for _ in link(dets, base.analysis.track_iou))

    def run_off() -> dict[str, Any]:
        return {"seconds": _work(off, gop, dets)}

    def run_on(_: int) -> dict[str, Any]:
        before = dict(on.attributes.cost.seconds)
        seconds = _work(on, gop, dets)
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
        },
    }  # fmt: skip
    write_result(result, args.out, "python -m bench.attributes " + " ".join(argv or []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
