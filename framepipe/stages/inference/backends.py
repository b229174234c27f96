"""Inference backends: one Protocol, implementations loading the same ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import structlog

from framepipe.pipeline.config import InferenceSettings
from framepipe.pipeline.errors import SetupError

FloatArray = npt.NDArray[np.float32]

log = structlog.get_logger("framepipe.inference")


class InferenceBackend(Protocol):
    """Runs a detector graph on an NCHW float32 batch; returns its outputs by name."""

    name: str

    def run(self, batch: FloatArray) -> dict[str, FloatArray]: ...

    def close(self) -> None: ...


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU (or the CUDA provider when it is installed)."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, intra_op_threads: int = 1, use_cuda: bool = False) -> None:
        import onnxruntime as ort

        if not model_path.is_file():
            raise SetupError(
                f"model {model_path} is missing: run `make models` (or `framepipe models build`)"
            )
        options = ort.SessionOptions()
        # A stage shares its node with other stages: one intra-op thread per
        # replica scales by replicas instead of oversubscribing cores.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, batch: FloatArray) -> dict[str, FloatArray]:
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))

    def close(self) -> None:
        del self.session


def describe_backend(backend: InferenceBackend) -> str:
    """The metrics label: onnxruntime-cpu, onnxruntime-cuda, tensorrt-fp16, tensorrt-fp32."""
    providers = getattr(backend, "providers", None)
    if providers is not None:
        return "onnxruntime-cuda" if "CUDAExecutionProvider" in providers else "onnxruntime-cpu"
    precision = getattr(backend, "precision", None)
    return f"{backend.name}-{precision}" if precision else backend.name


def select_backend(requested: str, unavailable_reason: str | None, allow_fallback: bool) -> str:
    """Which backend to build: pure, so the fallback rule is testable without a GPU.

    ``unavailable_reason`` is None when TensorRT can run. A missing TensorRT is
    a one-line SetupError unless ``allow_fallback``; then onnxruntime is used.
    """
    if requested == "onnxruntime":
        return "onnxruntime"
    if requested != "tensorrt":
        raise SetupError(f"inference.backend must be 'onnxruntime' or 'tensorrt', got {requested!r}")
    if unavailable_reason is None:
        return "tensorrt"
    if allow_fallback:
        log.warning(
            "inference.fallback", requested="tensorrt", using="onnxruntime", reason=unavailable_reason
        )
        return "onnxruntime"
    raise SetupError(
        f"inference.backend=tensorrt is unavailable: {unavailable_reason} "
        "(set inference.allow_fallback=true to use onnxruntime)"
    )


def create_backend(settings: InferenceSettings) -> InferenceBackend:
    from framepipe.stages.inference.tensorrt import TensorRTBackend, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason() if settings.backend == "tensorrt" else None
    chosen = select_backend(settings.backend, reason, settings.allow_fallback)
    if chosen == "tensorrt":
        return TensorRTBackend(
            settings.model_path,
            Path(settings.engine_cache_dir),
            max_batch=settings.max_batch,
            fp16=settings.fp16,
        )
    # With a fallback from tensorrt, a GPU may still be there: let ORT use CUDA.
    return OnnxRuntimeBackend(
        settings.model_path, settings.intra_op_threads, use_cuda=settings.backend == "tensorrt"
    )
