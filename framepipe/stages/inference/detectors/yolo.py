"""YOLO exports (the ``yolo`` family): v5/v7 heads and the transposed v8 head.

The model is the user's own ONNX export (``inference.model_file``), so its input
size, head layout, kept classes and class names all come from ``[inference]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.contract import InferenceBackend
from framepipe.stages.inference.detectors.base import DetectorPlugin, RawDetection

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class YoloConfig:
    """What a YOLO detector reads from ``[inference]`` (the ``yolo_*``, ``classes`` keys)."""

    layout: Literal["v5", "v8"]
    input_size: int
    #: class ids to keep; None keeps every class.
    classes: tuple[int, ...] | None
    class_names: tuple[str, ...]
    score_threshold: float
    nms_iou: float

    @classmethod
    def from_settings(cls, settings: InferenceSettings) -> YoloConfig:
        names = settings.class_names
        return cls(
            layout=settings.yolo_layout,
            input_size=settings.yolo_input_size,
            classes=settings.class_ids,
            class_names=tuple(n.strip() for n in names.split(",")) if names.strip() else (),
            score_threshold=settings.score_threshold,
            nms_iou=settings.nms_iou,
        )


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

    @classmethod
    def from_config(cls, backend: InferenceBackend, config: YoloConfig, max_batch: int) -> YoloDetector:
        decoder = YoloDecoder(
            config.score_threshold,
            config.nms_iou,
            classes=config.classes,
            transposed=config.layout == "v8",
            names=config.class_names,
        )
        return cls(backend, decoder, max_batch)

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


PLUGIN = DetectorPlugin(
    families=("yolo",),
    config_from=YoloConfig.from_settings,
    factory=YoloDetector.from_config,
    input_size_setting="yolo_input_size",
    model_file_hint="point it at your YOLO ONNX export",
)
