"""Cameras per node: the most real-time cameras sustained, per output mode and resolution.

For each resolution (720p30, 1080p30) and output mode (burn-in, overlay), at
``detect_fps = 5``, real-time cameras play the same clip on one running pipeline
(every stage a process on a real nats-server). A trial of N cameras is *sustained*
when every GOP arrives and per-GOP latency does not climb by a GOP over the clip
(:class:`bench.latency.RealtimePipeline`). The camera count is searched: doubling
from a start, then bisection between the last sustained and the first failed count.

Beside it, measured in the same run:

- the **limit** from bare-library costs: per camera-second, decode through the last
  ``detect_fps`` frame (as the decoder stage does: nothing after it is needed), letterbox
  and model of the ``detect_fps`` frames, and a remux of the GOP (overlay) or a second
  decode + draw + libx264 of every frame (burn-in); limit = cores / that cost. Each step
  is timed GOP by GOP and costs its cheapest of three passes;
- the **monolith**: the same work in one process (decode once, select, detect, remux or
  draw + encode), as cameras per core × cores.

Detection only: ``analysis.recognise_faces`` is off (naming faces is an optional extra cost,
measured by ``bench.faces`` and ``bench.attributes``).

Short trials (``--seconds``, 20 s by default, not the 60 s of the issue) keep it usable
on a shared machine; read the figures with the load average recorded beside them.
Not part of CI. Writes ``bench/results/density.json`` and ``density.png``.

    python -m bench.density [--quick] [--resolutions 720p,1080p] [--modes burn-in,overlay]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.common import (
    RESULTS,
    allocator_choice,
    bench_settings,
    clip,
    load_gops,
    pyplot,
    ratio,
    save_figure,
    write_result,
)
from bench.latency import RealtimePipeline
from framepipe.core.messages import Detection, GopMessage
from framepipe.core.settings import Settings
from framepipe.media.annotate import draw_detections_yuv420
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.letterbox import Letterbox
from framepipe.media.remux import remux_gop
from framepipe.media.sample import ClipSpec
from framepipe.stages.frame_selection import model_frames
from framepipe.stages.inference.backends import OnnxRuntimeBackend
from framepipe.stages.inference.detectors.blazeface import BlazeFaceDecoder, FaceDetector

MODES = ("burn-in", "overlay")


#: ONNX Runtime threads of the bare model and the monolith: the cheapest CPU per image. On
#: 2 cores, batches of 4: 1 thread 3.5 CPU ms per image; 2 threads 2.9 ms of wall time but
#: 4.5 CPU ms. (The limit once timed 2 threads by the wall clock, which counted less CPU per
#: image than even the single thread spends, and so overstated the limit.)
BARE_ORT_THREADS = 1


def _detector(settings: Settings) -> FaceDetector:
    cfg = settings.inference
    return FaceDetector(
        OnnxRuntimeBackend(cfg.model_path, BARE_ORT_THREADS),
        BlazeFaceDecoder(cfg.model, cfg.score_threshold, cfg.nms_iou),
        cfg.cpu_max_batch,
    )


#: passes over the clip; each step costs its cheapest pass (what the libraries allow).
BARE_REPEATS = 3


class _Steps:
    """CPU seconds (every thread of this process) spent in each named step."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._mark = time.process_time()

    def mark(self) -> None:
        self._mark = time.process_time()

    def lap(self, step: str) -> None:
        now = time.process_time()
        self.spent[step] = self.spent.get(step, 0.0) + now - self._mark
        self._mark = now


def bare_costs(gops: list[GopMessage], settings: Settings, repeats: int = BARE_REPEATS) -> dict[str, float]:
    """CPU seconds of each bare-library step per camera-second of video (this process).

    GOP by GOP, as a stage works and as the monolith does: a GOP's frames are freed before
    the next one is decoded. (Decoding the whole clip into memory first, as this once did,
    faulted in fresh pages for every frame and overstated decode by a third.) Each step's
    cost is its cheapest of ``repeats`` passes."""
    cfg, enc = settings.inference, settings.encoder
    detector = _detector(settings)
    face = [Detection((100.0, 100.0, 300.0, 300.0), 0.9)]
    best: dict[str, float] = {}
    frame_count = 0
    for _ in range(repeats):
        steps, frame_count = _Steps(), 0
        for gop in gops:
            # What the decoder stage does: select from the packets' pts, decode through the
            # last selected frame, letterbox the selected ones.
            shown = sorted(gop.pts)
            picked = model_frames(cfg, range(len(shown)), shown, gop.time_base)
            last = shown[max(i for i, chosen in enumerate(picked) if chosen)]
            frame_count += len(shown)
            box = Letterbox(cfg.input_size, gop.width, gop.height)
            steps.mark()
            frames = list(decode_gop(gop, 1, last))
            steps.lap("decode")
            tensor = np.stack([box.apply(f) for f, chosen in zip(frames, picked, strict=False) if chosen])
            steps.lap("letterbox")
            detector.detect(tensor)
            steps.lap("model")
            remux_gop(gop)
            steps.lap("remux")
            every = list(decode_gop(gop))  # burn-in: the encoder decodes every frame again
            steps.lap("decode_all")
            drawn = [draw_detections_yuv420(f, face) for f in every]
            encode_segment(drawn, Fraction(*gop.time_base), preset=enc.preset, crf=enc.crf, tune=enc.tune)
            steps.lap("encode")
        best = {k: min(v, best.get(k, v)) for k, v in steps.spent.items()}
    detector.backend.close()
    seconds = frame_count / 30.0
    per_s = {k: best[k] / seconds for k in ("decode", "letterbox", "model", "remux")}
    per_s["burn_in"] = (best["decode_all"] + best["encode"]) / seconds
    return {k: round(v, 5) for k, v in per_s.items()}


def bare_per_camera(costs: dict[str, float], mode: str) -> float:
    """CPU seconds per camera-second of a mode's bare work: decode, letterbox and model, then
    the remux (overlay) or the second decode, draw and encode (burn-in)."""
    per_camera = costs["decode"] + costs["letterbox"] + costs["model"]
    return per_camera + (costs["remux"] if mode == "overlay" else costs["burn_in"])


def limit(costs: dict[str, float], mode: str, cores: int) -> float:
    """Cameras the cores could carry at the bare costs (nothing for the bus or processes)."""
    per_camera = bare_per_camera(costs, mode)
    return cores / per_camera if per_camera > 0 else 0.0


def monolith_cameras(gops: list[GopMessage], settings: Settings, mode: str, cores: int) -> float:
    """Real-time cameras of an in-process monolith (decode once, select, detect, output), × cores."""
    cfg, enc = settings.inference, settings.encoder
    detector = _detector(settings)
    started = time.perf_counter()
    frames_done = 0
    for gop in gops:
        shown = sorted(gop.pts)
        picked = model_frames(cfg, range(len(shown)), shown, gop.time_base)
        # Overlay needs the frames through the last selected one; burn-in draws every frame.
        through = shown[max(i for i, chosen in enumerate(picked) if chosen)] if mode == "overlay" else None
        frames = list(decode_gop(gop, 1, through))[: len(shown)]
        picked = picked[: len(frames)]
        box = Letterbox(cfg.input_size, gop.width, gop.height)
        found = detector.detect(np.stack([box.apply(f) for f, s in zip(frames, picked, strict=True) if s]))
        if mode == "overlay":
            remux_gop(gop)
        else:
            dets = iter(found)
            last: list[Detection] = []
            drawn: list[av.VideoFrame] = []
            for frame, chosen in zip(frames, picked, strict=True):
                if chosen:
                    last = [Detection(box.to_source(d.box), d.score) for d in next(dets)]
                drawn.append(draw_detections_yuv420(frame, last) if last else frame)
            encode_segment(drawn, Fraction(*gop.time_base), preset=enc.preset, crf=enc.crf, tune=enc.tune)
        frames_done += len(shown)
    detector.backend.close()
    fps = frames_done / (time.perf_counter() - started)
    return fps / 30.0 * cores


def search(trial: Callable[[int], dict[str, Any]], start: int, cap: int) -> list[dict[str, Any]]:
    """Trials: double from ``start`` until one fails (or ``cap``), then bisect; returns them all."""
    trials: list[dict[str, Any]] = []
    good, bad = 0, cap + 1
    n = max(1, min(start, cap))
    while bad - good > 1:
        result = trial(n)
        trials.append(result)
        if result["sustained"]:
            good = n
            n = min(n * 2, cap) if bad > cap else (good + bad) // 2
        else:
            bad = n
            n = (good + bad) // 2
        if n in (good, bad) or n < 1:
            break
    return trials


def run_case(resolution: str, mode: str, seconds: float, cap: int, start: int) -> dict[str, Any]:
    spec = ClipSpec.named(resolution, gop=30, seconds=seconds)
    source = clip(spec)
    gops = load_gops(source)
    cores = os.cpu_count() or 1
    # Detection-only, as the limit counts it and as Frigate's density figures are: face
    # recognition (dlib on full-resolution crops, ~0.16 s a face) is a separate, optional cost
    # (bench.attributes / bench.faces). The analysis stage still routes, and in overlay mode
    # remuxes, every GOP.
    settings = bench_settings(
        decoder={"replicas": cores},
        encoder={"replicas": cores if mode == "burn-in" else 1},
        analysis={"replicas": cores if mode == "overlay" else 1},
    ).replace(inference={"detect_fps": 5.0}, output={"mode": mode}, analysis={"recognise_faces": False})
    costs = bare_costs(gops[: max(2, len(gops) // 4)], settings)
    bound = limit(costs, mode, cores)
    mono = monolith_cameras(gops[: max(2, len(gops) // 4)], settings, mode, cores)
    with (
        tempfile.TemporaryDirectory(prefix="fp-density-") as tmp,
        RealtimePipeline(settings, Path(tmp)) as rt,
    ):
        counter = iter(range(1000))

        def trial(n: int) -> dict[str, Any]:
            result = rt.trial(source, n, f"d{next(counter)}", spec.gop / spec.fps, stall_s=30.0)
            print(f"  {resolution} {mode}: {n} cameras → sustained={result['sustained']}", flush=True)
            result.pop("samples", None)
            return result

        trials = search(trial, start or max(1, int(bound * 0.5)), cap)
    kept = [t["cameras"] for t in trials if t["sustained"]]
    best = max(kept, default=0)
    return {
        "resolution": resolution,
        "mode": mode,
        "costs_s_per_camera_s": costs,
        "trials": trials,
        "summary": {
            "cameras_sustained": best,
            "limit_cameras": round(bound, 2),
            "ratio_to_limit": ratio(best, bound),
            "monolith_cameras": round(mono, 2),
            "ratio_to_monolith": ratio(best, mono),
            "cores": cores,
        },
    }


def plot(cases: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, case in cases.items():
        points = sorted((t["cameras"], t["latency_s"]["p50"], t["sustained"]) for t in case["trials"])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        for x, y, ok in points:
            if not ok:
                ax.plot([x], [y], "rx")
    ax.set_xlabel("real-time cameras")
    ax.set_ylabel("glass-to-output latency p50 (s)")
    ax.set_title("density (x: not sustained)")
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="720p, 10 s trials, up to 8 cameras")
    parser.add_argument("--resolutions", default="720p,1080p")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length of each trial")
    parser.add_argument("--max-cameras", type=int, default=24)
    parser.add_argument("--start", type=int, default=0, help="first count tried (0: half the limit)")
    parser.add_argument("--out", type=Path, default=RESULTS / "density.json")
    parser.add_argument(
        "--default-allocator", action="store_true", help="every process on glibc's malloc defaults"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.seconds, args.max_cameras = "720p", 10.0, 8
    # The bare costs and the monolith run with the allocator the stage processes use.
    allocator_tuned = allocator_choice(args.default_allocator)
    cases = {}
    for resolution in args.resolutions.split(","):
        for mode in args.modes.split(","):
            cases[f"{resolution} {mode}"] = run_case(
                resolution, mode, args.seconds, args.max_cameras, args.start
            )
    result = {
        "benchmark": "density",
        "params": {"seconds": args.seconds, "max_cameras": args.max_cameras, "detect_fps": 5.0},
        "allocator_tuned": allocator_tuned,
        "cases": cases,
        "summary": {k: c["summary"] for k, c in cases.items()},
    }
    write_result(result, args.out, " ".join(["python -m bench.density", *(argv or sys.argv[1:])]))
    if plot(cases, args.out.with_suffix(".png")):
        print(f"wrote {args.out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
