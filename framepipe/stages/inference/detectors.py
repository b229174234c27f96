"""Detector plug-ins: small pre/post-processing classes per model family.

A plug-in turns model-sized uint8 NHWC frames into the model's input and the
model's outputs back into :class:`RawDetection` lists (boxes in letterboxed
model pixels [x1, y1, x2, y2], score), so the stage is model-agnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from framepipe.stages.inference.backends import InferenceBackend
from framepipe.stages.inference.blazeface import RawDetection

FloatArray = npt.NDArray[np.float32]


class Detector(Protocol):
    """What the stage needs from a plug-in: a backend and frames → detections per frame."""

    backend: InferenceBackend
    #: frames per model call.
    max_batch: int

    def detect(self, frames: npt.NDArray[np.uint8]) -> list[list[RawDetection]]: ...


def select_frames(frame_indices: Sequence[int], every: int) -> list[bool]:
    """Which frames of one message the model runs on (``detect_every``).

    Frame n of a GOP is detected when ``n % every == 0``; the first frame of
    every message is detected too, because a skipped frame can only carry
    detections from an earlier frame of the same message (parts of a GOP may
    land on different replicas).
    """
    if every < 1:
        raise ValueError(f"detect_every must be >= 1, got {every}")
    return [pos == 0 or index % every == 0 for pos, index in enumerate(frame_indices)]


def select_by_rate(pts: Sequence[int], time_base: tuple[int, int], detect_fps: float) -> list[bool]:
    """Which frames of one message the model runs on (``detect_fps``), by timestamp.

    Video time is cut into slots of ``1 / detect_fps`` seconds from pts 0; a
    frame is detected when it is the first frame of its slot, so the model runs
    at most ``detect_fps`` times per second of video whatever the frame rate
    (variable frame rate included). The first frame of every message is
    detected too, for the same reason as in :func:`select_frames`. Exact
    rational arithmetic: 30 fps at 5/s picks every 6th frame, never drifting.
    """
    if detect_fps <= 0:
        raise ValueError(f"detect_fps must be > 0, got {detect_fps}")
    num, den = time_base
    if num <= 0 or den <= 0:
        raise ValueError(f"time_base must be positive, got {time_base}")
    # limit_denominator: 29.97 stays 2997/100, not the float's binary expansion.
    rate = Fraction(detect_fps).limit_denominator(1000)
    selected: list[bool] = []
    previous: int | None = None
    for value in pts:
        slot = (value * num * rate.numerator) // (den * rate.denominator)
        selected.append(previous is None or slot != previous)
        previous = slot
    return selected


def fill_skipped(
    selected: Sequence[bool], detected: Sequence[list[RawDetection]], carry: bool
) -> list[list[RawDetection]]:
    """Expand detections of the selected frames to every frame (carry or empty)."""
    if sum(selected) != len(detected):
        raise ValueError(f"{sum(selected)} frames selected but {len(detected)} results")
    results = iter(detected)
    out: list[list[RawDetection]] = []
    last: list[RawDetection] = []
    for chosen in selected:
        if chosen:
            last = next(results)
            out.append(last)
        else:
            out.append(list(last) if carry else [])
    return out


def _nms(boxes: FloatArray, scores: FloatArray, iou: float) -> list[int]:
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


class YoloDecoder:
    """YOLO-style head: one output ``[N, boxes, 4 + 1 + classes]`` (cx, cy, w, h, objectness,
    class scores) in input pixels, as YOLOv5/v7 export it. ``transposed=True`` reads the
    YOLOv8 layout ``[N, 4 + classes, boxes]`` (no objectness).

    Pre-processing: RGB uint8 → float32 NCHW in [0, 1].
    """

    def __init__(
        self,
        score_threshold: float = 0.5,
        nms_iou: float = 0.45,
        classes: Sequence[int] | None = None,
        transposed: bool = False,
        names: Sequence[str] = (),
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.classes = None if classes is None else set(classes)
        self.transposed = transposed
        self.names = tuple(names)

    def label(self, class_id: int) -> str:
        return self.names[class_id] if class_id < len(self.names) else str(class_id)

    @staticmethod
    def preprocess(frames: npt.NDArray[np.uint8]) -> FloatArray:
        return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)

    def decode(self, output: FloatArray) -> list[list[RawDetection]]:
        if output.ndim != 3:
            raise ValueError(f"YOLO output must be [N, boxes, k], got shape {output.shape}")
        results: list[list[RawDetection]] = []
        for rows in output:
            if self.transposed:
                rows = rows.T
                xywh, class_scores = rows[:, :4], rows[:, 4:]
                objectness = np.ones(len(rows), dtype=np.float32)
            else:
                xywh, objectness, class_scores = rows[:, :4], rows[:, 4], rows[:, 5:]
            if class_scores.shape[1] == 0:
                labels = np.zeros(len(rows), dtype=np.int64)
                scores = objectness
            else:
                labels = class_scores.argmax(axis=1)
                scores = objectness * class_scores[np.arange(len(rows)), labels]
            mask = scores >= self.score_threshold
            if self.classes is not None:
                mask &= np.isin(labels, list(self.classes))
            boxes = np.stack(
                [
                    xywh[:, 0] - xywh[:, 2] / 2,
                    xywh[:, 1] - xywh[:, 3] / 2,
                    xywh[:, 0] + xywh[:, 2] / 2,
                    xywh[:, 1] + xywh[:, 3] / 2,
                ],
                axis=1,
            ).astype(np.float32)[mask]
            kept_scores = scores[mask].astype(np.float32)
            frame: list[RawDetection] = []
            # Class-aware NMS: offset boxes per class so classes never suppress each other.
            kept_labels = labels[mask]
            offset = kept_labels.astype(np.float32)[:, None] * np.float32(1e4)
            for i in _nms(boxes + offset, kept_scores, self.nms_iou):
                x1, y1, x2, y2 = (float(v) for v in boxes[i])
                label = self.label(int(kept_labels[i]))
                frame.append(RawDetection((x1, y1, x2, y2), float(kept_scores[i]), label))
            results.append(frame)
        return results


class YoloDetector:
    """Backend + YOLO pre/post-processing, in model calls of at most ``max_batch`` frames."""

    def __init__(self, backend: InferenceBackend, decoder: YoloDecoder, max_batch: int) -> None:
        self.backend = backend
        self.decoder = decoder
        self.max_batch = max_batch

    def detect(self, frames: npt.NDArray[np.uint8]) -> list[list[RawDetection]]:
        results: list[list[RawDetection]] = []
        for start in range(0, len(frames), self.max_batch):
            outputs = self.backend.run(self.decoder.preprocess(frames[start : start + self.max_batch]))
            # Exports name the head differently (output0, output, ...); it is the 3-D one.
            head = next((v for v in outputs.values() if v.ndim == 3), None)
            if head is None:
                shapes = {k: v.shape for k, v in outputs.items()}
                raise ValueError(f"no [N, boxes, k] output in the YOLO model: {shapes}")
            results.extend(self.decoder.decode(head))
        return results
