"""Face analysis costs: per face, the stage against bare dlib, per camera-second, matching.

- **per face**: dlib's 5-point alignment + ResNet descriptor on one face of a decoded
  720p frame, as bare dlib calls (``shape_predictor`` + ``compute_face_descriptor(img,
  shape)`` per face) and as the analysis stage does it (``FaceEmbedder.crop`` per face,
  one batched ``describe`` for the GOP). Same frames, same boxes, passes interleaved
  (bare, stage, bare, ...) so both see the same machine load; the ratio is stage
  faces/s over bare faces/s (goal ≥ 0.9).
- **per camera-second**: :meth:`Analysis.embed` + the tracklet work on one real
  1-second 720p GOP with 0, 1 and 5 faces (boxes given, as the inference stage would
  give them), against the cost of decoding the same GOP (the encoder's floor).
  A GOP without faces never reaches the decoder: its cost is linking empty frames.
- **matching**: one query against 10 000 gallery people (one matmul + argmin).

Run: ``python -m bench.faces [--repeats N] [--out bench/results/faces.json]``. Needs
``make face-photos`` (real portraits) and dlib (``framepipe[models]``).
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from bench.common import MEDIA, RESULTS, interleaved, load_gops, ratio, stats, write_result
from framepipe.core.gallery import GalleryIndex, Person
from framepipe.core.messages import Detection, FrameDetections, GopMessage
from framepipe.core.settings import Settings
from framepipe.media.codec import decode_gop
from framepipe.media.sample import astronaut
from framepipe.stages.analysis.embedder import FaceEmbedder
from framepipe.stages.analysis.stage import Analysis
from framepipe.stages.analysis.tracklets import choose_crops, link

PHOTOS = Path(__file__).resolve().parents[1] / ".cache" / "face-photos"
CROPS = {"obama2.jpg": (4, 124, 604, 724), "biden.jpg": (280, 101, 880, 701), "obama.jpg": (183, 0, 783, 600)}
WIDTH, HEIGHT, FPS = 1280, 720, 30
TILE = 240  # each portrait is 240×240 in the frame: a face of ~110 px


def portraits() -> list[np.ndarray[Any, Any]]:
    tiles = [np.asarray(Image.fromarray(astronaut()).resize((TILE, TILE)))]
    for name, box in CROPS.items():
        with Image.open(PHOTOS / name) as photo:
            tiles.append(np.asarray(photo.convert("RGB").crop(box).resize((TILE, TILE))))
    tiles.append(tiles[1][:, ::-1].copy())  # a fifth face: the first portrait mirrored
    return tiles


def gop_with_faces(count: int) -> tuple[GopMessage, tuple[FrameDetections, ...]]:
    """A real 1-second 720p H.264 GOP with ``count`` portraits drifting, and their boxes."""
    path = MEDIA / f"faces_{count}_{WIDTH}x{HEIGHT}.mp4"
    tiles = portraits()[:count]
    boxes: list[list[tuple[float, float, float, float]]] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"  # type: ignore[union-attr]
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0"}
        for index in range(FPS):
            frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
            frame_boxes = []
            for i, tile in enumerate(tiles):
                x, y = 10 + i * (TILE + 10) + index, 200 + (i % 2) * 100
                frame[y : y + TILE, x : x + TILE] = tile
                # The portrait crops put the face in the middle ~45 % of the tile.
                frame_boxes.append((x + 0.28 * TILE, y + 0.22 * TILE, x + 0.72 * TILE, y + 0.70 * TILE))
            boxes.append(frame_boxes)
            video = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video.pts = index
            for packet in stream.encode(video):  # type: ignore[union-attr]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            container.mux(packet)
    (gop,) = load_gops(path)[:1]
    dets = tuple(
        FrameDetections(i, int(gop.pts[0]) + i, tuple(Detection(b, 0.9) for b in boxes[i]))
        for i in range(FPS)
    )
    return gop, dets


def per_face(
    embedder: FaceEmbedder, gop: GopMessage, dets: tuple[FrameDetections, ...], repeats: int
) -> dict[str, Any]:
    import dlib
    import face_recognition_models as models

    shape_predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    network = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    frames = [np.ascontiguousarray(f.to_ndarray(format="rgb24")) for f in decode_gop(gop)]
    picked = [(frames[i], dets[i].detections) for i in (0, 15)]  # two frames, every face in them
    faces = sum(len(d) for _, d in picked)

    def bare() -> dict[str, Any]:
        started = time.perf_counter()
        for image, detections in picked:
            for det in detections:
                x1, y1, x2, y2 = (round(v) for v in det.box)
                shape = shape_predictor(image, dlib.rectangle(x1, y1, x2, y2))
                network.compute_face_descriptor(image, shape)
        return {"seconds": time.perf_counter() - started}

    def stage(_: int) -> dict[str, Any]:
        started = time.perf_counter()
        chips = [embedder.crop(image, det.box).chip for image, detections in picked for det in detections]
        embedder.describe(chips)
        return {"seconds": time.perf_counter() - started}

    passes, runs = interleaved(repeats, bare, stage)
    bare_s = [p["seconds"] for p in passes]
    stage_s = [r["seconds"] for r in runs]
    # Throughput ratio of each stage pass against the mean of the bare passes around it.
    paired = [ratio((bare_s[i] + bare_s[i + 1]) / 2, s) for i, s in enumerate(stage_s)]
    return {
        "faces_per_pass": faces,
        "bare_ms_per_face": stats([1000 * s / faces for s in bare_s]),
        "stage_ms_per_face": stats([1000 * s / faces for s in stage_s]),
        "stage_vs_bare_throughput": {"paired_median": float(np.median(paired)), "paired": paired},
    }


def per_camera_second(analysis: Analysis, repeats: int) -> dict[str, Any]:
    cfg = analysis.settings.analysis
    out: dict[str, Any] = {}
    for count in (0, 1, 5):
        gop, dets = gop_with_faces(max(count, 1))
        if count == 0:
            dets = tuple(FrameDetections(f.frame, f.pts, ()) for f in dets)

        def decode_only(gop: GopMessage = gop) -> dict[str, Any]:
            started = time.perf_counter()
            for _ in decode_gop(gop):
                pass
            return {"seconds": time.perf_counter() - started}

        def analyse(
            _: int, gop: GopMessage = gop, dets: tuple[FrameDetections, ...] = dets
        ) -> dict[str, Any]:
            started = time.perf_counter()
            tracks = link(dets, cfg.track_iou)
            wanted = {
                t.local: c for t in tracks if (c := choose_crops(t, cfg.crops_per_track, cfg.min_face_px))
            }
            embedded = analysis.embed(gop, wanted) if wanted else {}
            for t in tracks:
                analysis.summarise(t, embedded.get(t.local), gop)
            return {"seconds": time.perf_counter() - started}

        passes, runs = interleaved(repeats, decode_only, analyse)
        decode_s = float(np.median([p["seconds"] for p in passes]))
        analyse_s = float(np.median([r["seconds"] for r in runs]))
        out[f"{count}_faces"] = {
            "analysis_ms_per_camera_s": round(1000 * analyse_s, 3),
            "decode_ms_per_camera_s": round(1000 * decode_s, 1),
            "analysis_vs_decode": ratio(analyse_s, decode_s),
        }
    return out


def matching(people: int = 10_000, queries: int = 200) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    gallery = [Person(f"p{i}", rng.normal(0, 0.09, (1, 128)).astype(np.float32)) for i in range(people)]
    started = time.perf_counter()
    index = GalleryIndex(gallery)
    build_s = time.perf_counter() - started
    batch = rng.normal(0, 0.09, (queries, 128)).astype(np.float32)
    one = []
    for row in batch:
        started = time.perf_counter()
        index.match(row)
        one.append(1000 * (time.perf_counter() - started))
    rows = index.matrix
    loop = []
    for row in batch[:20]:  # the baseline: a distance per row in Python, then min
        started = time.perf_counter()
        min(float(np.linalg.norm(r - row)) for r in rows)
        loop.append(1000 * (time.perf_counter() - started))
    return {
        "people": people,
        "build_ms": round(1000 * build_s, 1),
        "match_ms_per_query": stats(one),
        "python_loop_ms_per_query": stats(loop),
        "loop_vs_matmul": ratio(float(np.median(loop)), float(np.median(one))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "faces.json")
    args = parser.parse_args(argv)
    analysis = Analysis(Settings())
    analysis._embedder = FaceEmbedder()
    gop, dets = gop_with_faces(5)
    faces = per_face(analysis.embedder, gop, dets, args.repeats)
    seconds = per_camera_second(analysis, args.repeats)
    match = matching()
    result = {
        "benchmark": "faces",
        "params": {"resolution": f"{WIDTH}x{HEIGHT}", "fps": FPS, "repeats": args.repeats,
                   "crops_per_track": analysis.settings.analysis.crops_per_track},
        "per_face": faces,
        "per_camera_second": seconds,
        "matching": match,
        "summary": {
            "stage_vs_bare_dlib": faces["stage_vs_bare_throughput"]["paired_median"],
            "bare_ms_per_face": faces["bare_ms_per_face"]["p50"],
            "stage_ms_per_face": faces["stage_ms_per_face"]["p50"],
            **{f"analysis_ms_per_camera_s_{k}": v["analysis_ms_per_camera_s"] for k, v in seconds.items()},
            "match_ms_10k": match["match_ms_per_query"]["p50"],
        },
    }  # fmt: skip
    write_result(result, args.out, "python -m bench.faces " + " ".join(argv or []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
