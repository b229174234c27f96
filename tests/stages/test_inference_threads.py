"""ONNX Runtime thread settings: cores shared by replicas, container CPU limits, the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framepipe.core.settings import ConfigError, InferenceSettings
from framepipe.stages.inference.backends import (
    OnnxRuntimeBackend,
    _cgroup_cpu_limit,
    available_cpus,
    backend_info,
    ort_threads,
)
from framepipe.stages.inference.contract import BackendInfo


def test_auto_threads_share_the_cores_between_replicas() -> None:
    """0 (the default) divides the usable cores by the replicas, never below one; a
    positive setting is taken as it is."""
    assert InferenceSettings().intra_op_threads == 0
    assert ort_threads(0, replicas=1, cpus=8) == 8
    assert ort_threads(0, replicas=3, cpus=8) == 2
    assert ort_threads(0, replicas=4, cpus=2) == 1
    assert ort_threads(3, replicas=4, cpus=2) == 3
    with pytest.raises(ConfigError, match=r"inference\.intra_op_threads must be >= 0"):
        InferenceSettings(intra_op_threads=-1)
    with pytest.raises(ConfigError, match=r"inference\.inter_op_threads must be > 0"):
        InferenceSettings(inter_op_threads=0)


def test_container_cpu_limit_caps_the_core_count(tmp_path: Path) -> None:
    """A pod limited to 1.5 CPUs on a big node counts 2 cores, not the node's; no limit
    ("max") or no cgroup files leave the affinity count."""
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_limit(v1) == 0.5
    assert available_cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_cpu_limit(v1) is None
    assert available_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_the_session_gets_the_threads_and_reports_its_device(models_dir: Path) -> None:
    """The built session uses the resolved thread count; without a GPU the CUDA provider
    is absent, so the backend reports onnxruntime on cpu in fp32."""
    backend = OnnxRuntimeBackend(models_dir / "face_detection_full_range.onnx", intra_op_threads=1)
    try:
        assert backend.intra_op_threads == 1
        assert backend.input_shape[1:] == [3, 192, 192]
        info = backend_info(backend)
        if "CUDAExecutionProvider" in backend.providers:  # pragma: no cover - GPU machines
            assert (info.backend, info.device, info.label) == ("onnxruntime", "cuda", "onnxruntime-cuda")
        else:
            assert (info.backend, info.device, info.precision) == ("onnxruntime", "cpu", "fp32")
            assert info.label == "onnxruntime-cpu"
    finally:
        backend.close()


def test_backend_labels_keep_their_short_form() -> None:
    """The older one-label metric keeps its values (onnxruntime-cpu, tensorrt-fp16...)."""
    assert BackendInfo("onnxruntime", "cpu", "fp32").label == "onnxruntime-cpu"
    assert BackendInfo("onnxruntime", "cuda", "fp32").label == "onnxruntime-cuda"
    assert BackendInfo("tensorrt", "NVIDIA H100 80GB HBM3", "fp16").label == "tensorrt-fp16"
    assert BackendInfo("tensorrt", "NVIDIA H100 80GB HBM3", "fp32").label == "tensorrt-fp32"
