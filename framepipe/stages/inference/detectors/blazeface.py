"""MediaPipe BlazeFace: the ``blazeface-full`` and ``blazeface-short`` families.

Pre-processing: letterboxed RGB uint8 (from the decoder) → float32 NCHW in
[-1, 1]. Post-processing: SSD anchor decoding and MediaPipe's weighted
non-maximum suppression (overlapping boxes are averaged by score rather than
dropped), with parameters from MediaPipe's face_detection graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.contract import InferenceBackend
from framepipe.stages.inference.detectors.base import DetectorPlugin, RawDetection

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AnchorSpec:
    input_size: int
    strides: tuple[int, ...]
    anchors_per_stride: tuple[int, ...]


SPECS = {
    # 192×192, one 48×48 layer, one anchor per cell (MediaPipe full-range graph).
    "full_range": AnchorSpec(192, (4,), (1,)),
    # 128×128, strides 8,16,16,16 → 16×16×2 + 8×8×6 anchors.
    "short_range": AnchorSpec(128, (8, 16), (2, 6)),
}
# The family names of ``inference.model`` for the same two graphs.
SPECS["blazeface-full"] = SPECS["full_range"]
SPECS["blazeface-short"] = SPECS["short_range"]


def make_anchors(spec: AnchorSpec) -> FloatArray:
    """Anchor centres (cx, cy) in [0, 1], in the model's output order."""
    centres: list[FloatArray] = []
    for stride, count in zip(spec.strides, spec.anchors_per_stride, strict=True):
        cells = spec.input_size // stride
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        cy, cx = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([cx.ravel(), cy.ravel()], axis=1)
        centres.append(np.repeat(xy, count, axis=0))
    return np.concatenate(centres, axis=0)


def preprocess(frames: npt.NDArray[np.uint8]) -> FloatArray:
    """NHWC uint8 → NCHW float32 in [-1, 1]."""
    x = frames.astype(np.float32) * (1.0 / 127.5) - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class BlazeFaceDecoder:
    """Turns the model's (regressors, classificators) into boxes per image."""

    def __init__(self, model: str, score_threshold: float = 0.5, nms_iou: float = 0.3) -> None:
        self.spec = SPECS[model]
        self.anchors = make_anchors(self.spec)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def decode(self, regressors: FloatArray, scores: FloatArray) -> list[list[RawDetection]]:
        """``regressors``: (N, anchors, 16); ``scores``: (N, anchors, 1) logits."""
        size = float(self.spec.input_size)
        results: list[list[RawDetection]] = []
        # Clip logits to ±80: float32 exp overflows past ~88.
        probs = 1.0 / (1.0 + np.exp(-np.clip(scores[..., 0], -80.0, 80.0)))
        for image in range(regressors.shape[0]):
            keep = np.nonzero(probs[image] >= self.score_threshold)[0]
            if keep.size == 0:
                results.append([])
                continue
            raw = regressors[image, keep, :4] / size
            anchors = self.anchors[keep]
            cx = raw[:, 0] + anchors[:, 0]
            cy = raw[:, 1] + anchors[:, 1]
            half_w, half_h = raw[:, 2] / 2.0, raw[:, 3] / 2.0
            boxes = (np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1) * size).astype(
                np.float32
            )
            results.append(weighted_nms(boxes, probs[image, keep], self.nms_iou))
        return results


def iou(box: FloatArray, others: FloatArray) -> FloatArray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def weighted_nms(boxes: FloatArray, scores: FloatArray, threshold: float) -> list[RawDetection]:
    """MediaPipe's WEIGHTED suppression: cluster by IoU, average boxes by score."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out: list[RawDetection] = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = iou(boxes[i], boxes) > threshold
        cluster = overlap & remaining
        remaining &= ~cluster
        weights = scores[cluster]
        merged = (boxes[cluster] * weights[:, None]).sum(axis=0) / weights.sum()
        out.append(RawDetection(tuple(float(v) for v in merged), float(scores[i])))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class BlazeFaceConfig:
    """What a BlazeFace detector reads from ``[inference]``."""

    family: str  # blazeface-full | blazeface-short
    score_threshold: float
    nms_iou: float
    input_size: int

    @classmethod
    def from_settings(cls, settings: InferenceSettings) -> BlazeFaceConfig:
        return cls(settings.family, settings.score_threshold, settings.nms_iou, settings.input_size)


class FaceDetector:
    """Backend + BlazeFace pre/post-processing, batched up to ``max_batch``."""

    def __init__(self, backend: InferenceBackend, decoder: BlazeFaceDecoder, max_batch: int) -> None:
        self.backend = backend
        self.decoder = decoder
        self.max_batch = max_batch

    @classmethod
    def from_config(cls, backend: InferenceBackend, config: BlazeFaceConfig, max_batch: int) -> FaceDetector:
        return cls(
            backend, BlazeFaceDecoder(config.family, config.score_threshold, config.nms_iou), max_batch
        )

    def detect(self, frames: npt.NDArray[np.uint8]) -> list[list[RawDetection]]:
        results: list[list[RawDetection]] = []
        for start in range(0, len(frames), self.max_batch):
            outputs = self.backend.run(preprocess(frames[start : start + self.max_batch]))
            regressors = next(v for v in outputs.values() if v.shape[-1] == 16)
            scores = next(v for v in outputs.values() if v.shape[-1] == 1)
            results.extend(self.decoder.decode(regressors, scores))
        return results


PLUGIN = DetectorPlugin(
    families=("blazeface-full", "blazeface-short"),
    config_from=BlazeFaceConfig.from_settings,
    factory=FaceDetector.from_config,
)
