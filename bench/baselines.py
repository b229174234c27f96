"""What the bare libraries do, for the ratios: the same work as the stages, in this process."""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from framepipe.core.messages import Detection, FrameBatch, GopMessage
from framepipe.core.settings import Settings
from framepipe.media.annotate import draw_detections_yuv420
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.letterbox import Letterbox
from framepipe.stages.decoder import decode_letterboxed
from framepipe.stages.decoder import frame_batches as decoder_frame_batches
from framepipe.stages.inference.backends import OnnxRuntimeBackend
from framepipe.stages.inference.detectors.blazeface import BlazeFaceDecoder, FaceDetector


def monolith(gops: list[GopMessage], settings: Settings) -> dict[str, Any]:
    """Decode once, detect, draw, encode — all in this process."""
    cfg = settings.inference
    detector = FaceDetector(
        OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads),
        BlazeFaceDecoder(cfg.model, cfg.score_threshold, cfg.nms_iou),
        cfg.max_batch,
    )
    frames_done = 0
    started = time.perf_counter()
    per_gop: list[float] = []
    for gop in gops:
        t0 = time.perf_counter()
        frames = list(decode_gop(gop))
        letterbox = Letterbox(cfg.input_size, gop.width, gop.height)
        tensors = np.stack([letterbox.apply(f) for f in frames])
        found = detector.detect(tensors)
        annotated: list[av.VideoFrame] = []
        for frame, dets in zip(frames, found, strict=True):
            boxes = [Detection(letterbox.to_source(d.box), d.score) for d in dets]
            annotated.append(draw_detections_yuv420(frame, boxes) if boxes else frame)
        enc = settings.encoder
        codec = "libx264" if enc.codec == "auto" else enc.codec
        encode_segment(annotated, Fraction(*gop.time_base), codec=codec, preset=enc.preset, crf=enc.crf)
        frames_done += len(frames)
        per_gop.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"frames": frames_done, "seconds": elapsed, "fps": frames_done / elapsed, "per_gop_s": per_gop}


def frame_batches(gops: list[GopMessage], settings: Settings) -> list[FrameBatch]:
    """What the decoder stage publishes for these GOPs (its own code, in this process)."""
    out = []
    for seq, gop in enumerate(gops, start=1):
        frames, pts, box = decode_letterboxed(gop, settings.inference.input_size, settings.decoder.threads)
        out += decoder_frame_batches(gop, seq, frames, pts, box, settings)
    return out
