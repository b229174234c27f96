"""Detector plug-ins (YOLO parser on a synthetic ONNX graph), detect_every selection, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from framepipe.core.settings import ConfigError, InferenceSettings
from framepipe.stages.frame_selection import fill_skipped, select_frames
from framepipe.stages.inference.backends import OnnxRuntimeBackend, create_backend, describe_backend
from framepipe.stages.inference.detectors.base import RawDetection
from framepipe.stages.inference.detectors.yolo import YoloDecoder


def _yolo_graph(path: Path, head: np.ndarray) -> None:
    """A tiny 'YOLO' graph: image [N,3,8,8] → constant head broadcast over the batch.

    out = head + 0 * ReduceSum(image), so the batch dimension flows from the input
    and the head rows are what a YOLOv5 export emits: cx, cy, w, h, obj, classes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceSum", ["images", "axes"], ["summed"], keepdims=1),  # [N,1,1,1]
        helper.make_node("Reshape", ["summed", "shape3"], ["n11"]),  # [N,1,1]
        helper.make_node("Mul", ["n11", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "head"], ["output0"]),  # [N,boxes,k]
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_stub",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", *head.shape])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape3"),
            numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero"),
            numpy_helper.from_array(head.astype(np.float32)[None], "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


HEAD = np.array(
    [
        # cx, cy, w, h, obj, person, car
        [50, 50, 20, 40, 0.9, 0.95, 0.05],  # person, 0.855
        [52, 51, 20, 40, 0.8, 0.90, 0.10],  # overlaps the first: suppressed by NMS
        [52, 51, 20, 40, 0.9, 0.10, 0.90],  # same place, other class: kept (class-aware NMS)
        [10, 10, 4, 4, 0.3, 0.90, 0.10],  # below threshold
    ]
)


def test_yolo_parser_on_a_synthetic_onnx_graph(tmp_path: Path) -> None:
    """Each frame of the batch gets the best box per class after class-aware NMS; classes filters."""
    model = tmp_path / "yolo.onnx"
    _yolo_graph(model, HEAD)
    backend = OnnxRuntimeBackend(model)
    try:
        frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
        outputs = backend.run(YoloDecoder.preprocess(frames))
    finally:
        backend.close()
    (output,) = outputs.values()
    assert output.shape == (3, 4, 7)
    detections = YoloDecoder(score_threshold=0.5, nms_iou=0.45).decode(output)
    assert len(detections) == 3
    for frame in detections:
        assert len(frame) == 2
        best = frame[0]
        assert best.box == pytest.approx((40.0, 30.0, 60.0, 70.0))
        assert best.score == pytest.approx(0.855, abs=1e-5)
        assert frame[1].score == pytest.approx(0.81, abs=1e-5)
    persons_only = YoloDecoder(score_threshold=0.5, classes=[0]).decode(output)
    assert [len(f) for f in persons_only] == [1, 1, 1]


def test_yolo_v8_transposed_layout() -> None:
    """YOLOv8 exports (attributes × boxes, no objectness column) decode with transposed=True."""
    rows = np.array([[50, 50, 20, 40, 0.7, 0.1]], dtype=np.float32)  # cx cy w h person car
    out = YoloDecoder(score_threshold=0.5, transposed=True).decode(rows.T[None])
    assert len(out[0]) == 1
    assert out[0][0].score == pytest.approx(0.7)


def test_detect_every_frame_selection() -> None:
    """detect_every = N picks every Nth frame index, and always a message's first frame."""
    assert select_frames([0, 1, 2, 3, 4, 5], 1) == [True] * 6
    assert select_frames([0, 1, 2, 3, 4, 5], 3) == [True, False, False, True, False, False]
    # A later part of a GOP starts mid-cycle: its first frame is always detected.
    assert select_frames([7, 8, 9, 10], 3) == [True, False, True, False]
    with pytest.raises(ValueError, match="detect_every"):
        select_frames([0], 0)


def test_skipped_frames_carry_or_none() -> None:
    """Skipped frames repeat the last detections (carry) or get none; a count mismatch is an error."""
    a = [RawDetection((1, 1, 2, 2), 0.9)]
    b: list[RawDetection] = []
    selected = [True, False, False, True, False]
    assert fill_skipped(selected, [a, b], carry=True) == [a, a, a, b, b]
    assert fill_skipped(selected, [a, b], carry=False) == [a, [], [], b, []]
    with pytest.raises(ValueError, match="selected"):
        fill_skipped(selected, [a], carry=True)


def test_inference_settings_validate_new_fields() -> None:
    """detect_every below 1 and an unknown skipped_frames are ConfigErrors naming the field."""
    with pytest.raises(ConfigError, match=r"inference\.detect_every"):
        InferenceSettings(detect_every=0)
    with pytest.raises(ConfigError, match=r"inference\.skipped_frames"):
        InferenceSettings(skipped_frames="last")  # type: ignore[arg-type]


def test_tensorrt_fallback_builds_onnxruntime(models_dir: Path) -> None:
    """backend = "tensorrt" with allow_fallback and no TensorRT builds the ONNX Runtime CPU backend."""
    from framepipe.stages.inference.tensorrt import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:  # pragma: no cover
        pytest.skip("TensorRT is available here: no fallback")
    backend = create_backend(
        InferenceSettings(backend="tensorrt", allow_fallback=True, models_dir=str(models_dir))
    )
    try:
        assert describe_backend(backend) == "onnxruntime-cpu"
    finally:
        backend.close()
