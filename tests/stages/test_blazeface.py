"""The real BlazeFace models (converted at `make models`) on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from framepipe.media.letterbox import Letterbox
from framepipe.media.sample import ASTRONAUT_FACE
from framepipe.stages.inference.backends import OnnxRuntimeBackend
from framepipe.stages.inference.detectors.blazeface import (
    SPECS,
    BlazeFaceDecoder,
    FaceDetector,
    iou,
    make_anchors,
)


def _detector(models_dir: Path, model: str) -> FaceDetector:
    backend = OnnxRuntimeBackend(models_dir / f"face_detection_{model}.onnx")
    return FaceDetector(backend, BlazeFaceDecoder(model), max_batch=8)


def test_anchor_counts_match_the_models() -> None:
    """2304 anchors for full range (48×48×1), 896 for short range (16×16×2 + 8×8×6)."""
    assert make_anchors(SPECS["full_range"]).shape == (2304, 2)
    assert make_anchors(SPECS["short_range"]).shape == (896, 2)


@pytest.mark.parametrize("model", ["full_range", "short_range"])
def test_astronaut_face_is_found(models_dir: Path, model: str) -> None:
    """One face on the astronaut photo, IoU ≥ 0.5 with the stated box (172,62)-(282,180)."""
    image = np.ascontiguousarray(data.astronaut())
    detector = _detector(models_dir, model)
    letterbox = Letterbox(detector.decoder.input_size, image.shape[1], image.shape[0])
    [found] = detector.detect(letterbox.apply_array(image)[None])
    assert len(found) == 1
    box = np.array(letterbox.to_source(found[0].box), dtype=np.float32)
    overlap = iou(np.array(ASTRONAUT_FACE, dtype=np.float32), box[None])[0]
    assert overlap >= 0.5, (box, overlap)
    assert found[0].score >= 0.75


@pytest.mark.parametrize("model", ["full_range", "short_range"])
def test_face_free_image_gives_nothing(models_dir: Path, model: str) -> None:
    """A cup of coffee has no face above the threshold."""
    image = np.ascontiguousarray(data.coffee())
    detector = _detector(models_dir, model)
    letterbox = Letterbox(detector.decoder.input_size, image.shape[1], image.shape[0])
    assert detector.detect(letterbox.apply_array(image)[None]) == [[]]


def test_dynamic_batch_gives_identical_results(models_dir: Path) -> None:
    """The patched graph runs batch 5 and returns what batch 1 returns, per image."""
    detector = _detector(models_dir, "full_range")
    images = [np.ascontiguousarray(data.astronaut()), np.ascontiguousarray(data.coffee())]
    size = detector.decoder.input_size
    frames = np.stack([Letterbox(size, i.shape[1], i.shape[0]).apply_array(i) for i in images] * 3)[:5]
    batched = detector.backend.run((frames.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy())
    for index in range(len(frames)):
        single = detector.backend.run(
            (frames[index : index + 1].astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()
        )
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][index], value[0], rtol=1e-4, atol=1e-4)


def test_letterbox_round_trip() -> None:
    """A box mapped into the model input and back lands where it started."""
    lb = Letterbox(192, 1280, 720)
    assert lb.pad == (0, 42)
    x1, y1, x2, y2 = 100.0, 200.0, 300.0, 400.0
    s = lb.scale
    inner = (x1 * s + lb.pad[0], y1 * s + lb.pad[1], x2 * s + lb.pad[0], y2 * s + lb.pad[1])
    assert lb.to_source(inner) == pytest.approx((x1, y1, x2, y2))
