"""Inference backends: one Protocol, implementations loading the same ONNX file."""

from __future__ import annotations

import math
import os
from pathlib import Path

import structlog

from framepipe.core.errors import SetupError
from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.contract import BackendInfo, FloatArray, InferenceBackend

log = structlog.get_logger("framepipe.inference")


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this container in cores (cgroup v2 ``cpu.max`` or v1 CFS), if any."""
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")
        if quota.strip() != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its affinity mask, capped by a container CPU limit.

    ``os.cpu_count()`` reports the node's cores, which in a pod limited to 2 CPUs
    would make ONNX Runtime start dozens of threads that the quota then throttles.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def ort_threads(intra_op_threads: int, replicas: int, cpus: int | None = None) -> int:
    """Intra-op threads per session: the setting, or (0) the usable cores shared by the replicas."""
    if intra_op_threads > 0:
        return intra_op_threads
    return max(1, (available_cpus() if cpus is None else cpus) // max(1, replicas))


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU, or on the CUDA provider when it is installed and ``use_cuda``."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        intra_op_threads: int = 0,
        use_cuda: bool = True,
        inter_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        if not model_path.is_file():
            raise SetupError(
                f"model {model_path} is missing: run `make models` (or `framepipe models build`)"
            )
        options = ort.SessionOptions()
        # A stage shares its node with other stages and replicas: threads come from
        # ort_threads (cores / replicas) rather than ORT's default of every core.
        self.intra_op_threads: int | None = ort_threads(intra_op_threads, 1)
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        # The detectors are chains of nodes: parallel execution only pays with branches.
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.log_severity_level = 3
        # Idle ORT workers spin-wait by default: on a node shared with other stages
        # (or under a pod CPU quota) that burns the cores they need. Measured on 2
        # cores: 2 spinning threads 111 images per CPU-second, 117 without spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        #: ints for fixed dimensions, names or None for dynamic ones.
        self.input_shape: list[int | str | None] = list(self.session.get_inputs()[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def info(self) -> BackendInfo:
        device = "cuda" if "CUDAExecutionProvider" in self.providers else "cpu"
        return BackendInfo(self.name, device, "fp32")

    def run(self, batch: FloatArray) -> dict[str, FloatArray]:
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))

    def close(self) -> None:
        del self.session


def backend_info(backend: InferenceBackend) -> BackendInfo:
    """Backend, device and precision of a built backend (what actually runs, after fallbacks)."""
    return backend.info()


def describe_backend(backend: InferenceBackend) -> str:
    """The metrics label: onnxruntime-cpu, onnxruntime-cuda, tensorrt-fp16, tensorrt-fp32."""
    return backend_info(backend).label


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
    # ORT takes the CUDA provider whenever it is installed (onnxruntime-gpu), e.g. after
    # a fallback from tensorrt on a GPU node without TensorRT.
    return OnnxRuntimeBackend(
        settings.model_path,
        ort_threads(settings.intra_op_threads, settings.replicas),
        use_cuda=True,
        inter_op_threads=settings.inter_op_threads,
    )
