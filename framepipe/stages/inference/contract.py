"""What every inference backend is: the protocol the detectors call, and what it reports.

ONNX Runtime (``backends.py``) and TensorRT (``tensorrt.py``) implement it over the
same ONNX file; this module imports neither, so both can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BackendInfo:
    """What runs the model, as reported by metrics and ``framepipe status``."""

    backend: str  # onnxruntime | tensorrt
    device: str  # cpu | cuda | the GPU's name
    precision: str  # fp32 | fp16

    @property
    def label(self) -> str:
        """The short form: onnxruntime-cpu, onnxruntime-cuda, tensorrt-fp16, tensorrt-fp32."""
        if self.backend == "onnxruntime":
            return f"onnxruntime-{'cuda' if self.device != 'cpu' else 'cpu'}"
        return f"{self.backend}-{self.precision}"


class InferenceBackend(Protocol):
    """Runs a detector graph on an NCHW float32 batch; returns its outputs by name."""

    name: str
    #: the model input: ints for fixed dimensions, names or None for dynamic ones (the batch).
    input_shape: list[int | str | None]
    #: CPU threads of one model call; None where the work is not on the CPU's threads.
    intra_op_threads: int | None

    def info(self) -> BackendInfo:
        """What runs the model (after any fallback), for metrics and ``framepipe status``."""
        ...

    def run(self, batch: FloatArray) -> dict[str, FloatArray]: ...

    def close(self) -> None: ...
