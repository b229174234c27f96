"""Inference backends: one Protocol, implementations loading the same ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from framepipe.pipeline.config import InferenceSettings
from framepipe.pipeline.errors import SetupError

FloatArray = npt.NDArray[np.float32]


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


def create_backend(settings: InferenceSettings) -> InferenceBackend:
    if settings.backend == "onnxruntime":
        return OnnxRuntimeBackend(settings.model_path, settings.intra_op_threads)
    raise SetupError(
        f"inference.backend={settings.backend!r} is not available in this build; "
        "use inference.backend=onnxruntime"
    )
