"""TensorRT backend (tensorrt + pycuda), with the GPU-free parts kept pure.

Pure, testable without a GPU:
- :func:`engine_cache_key` / :class:`EngineIdentity`: the on-disk cache key of a
  serialized engine (model sha256, GPU name + compute capability, TensorRT
  version, precision, batch range).
- :func:`optimisation_profile`: the (min, opt, max) input shapes of the dynamic
  batch profile.
- :class:`EngineCache`: where an engine lives and whether a file on disk is a
  valid engine for an identity (a stale or mismatched file is rebuilt, never
  loaded).

GPU-only: :class:`TensorRTBackend` (engine build/load, page-locked host buffers,
device buffers, async H2D → execute → D2H on one CUDA stream). ``tensorrt`` and
``pycuda`` are imported lazily, so this module imports on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from framepipe.core.errors import SetupError
from framepipe.stages.inference.contract import BackendInfo

FloatArray = npt.NDArray[np.float32]

#: Bumped when the key layout or the meta file format changes.
CACHE_FORMAT = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineIdentity:
    """Everything a serialized engine depends on; any change means a rebuild."""

    model_sha256: str
    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str
    precision: str  # "fp16" | "fp32"
    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                "batch range must satisfy 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        data["format"] = CACHE_FORMAT
        return data


def engine_cache_key(identity: EngineIdentity) -> str:
    """A stable filename-safe key: sha256 over the canonical JSON of the identity."""
    canonical = json.dumps(identity.as_json(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def optimisation_profile(
    input_shape: tuple[int, ...], min_batch: int, opt_batch: int, max_batch: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes for an input whose first dimension is the batch.

    ``input_shape`` is the ONNX input shape; its batch entry may be symbolic
    (``-1``/``0``/a name); every other dimension must be a fixed positive int.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(
            f"batch range must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}"
        )
    rest = tuple(input_shape[1:])
    if not rest or any(not isinstance(d, int) or d <= 0 for d in rest):
        raise ValueError(f"non-batch input dimensions must be fixed, got {input_shape}")
    return (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)


def default_opt_batch(min_batch: int, max_batch: int) -> int:
    """The batch TensorRT tunes kernels for: the power of two nearest max/2, in range."""
    target = max(min_batch, max_batch // 2)
    power = 1
    while power * 2 <= target:
        power *= 2
    return max(min_batch, min(power, max_batch))


class EngineCache:
    """``<dir>/<key>.engine`` plus ``<key>.json`` holding the identity it was built for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def paths(self, identity: EngineIdentity) -> tuple[Path, Path]:
        key = engine_cache_key(identity)
        return self.directory / f"{key}.engine", self.directory / f"{key}.json"

    def lookup(self, identity: EngineIdentity) -> Path | None:
        """The engine file if it exists and its meta matches ``identity`` exactly, else None.

        A mismatched or unreadable meta, or an empty engine, is removed so that
        the caller rebuilds: a stale engine is never loaded.
        """
        engine, meta = self.paths(identity)
        if not engine.is_file() or not meta.is_file():
            self._discard(engine, meta)
            return None
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError):
            stored = None
        if stored != identity.as_json() or engine.stat().st_size == 0:
            self._discard(engine, meta)
            return None
        return engine

    def store(self, identity: EngineIdentity, serialized: bytes) -> Path:
        """Write engine then meta atomically (meta last: a torn write is a miss)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine, meta = self.paths(identity)
        for path, payload in ((engine, bytes(serialized)), (meta, json.dumps(identity.as_json()).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(payload)
            tmp.replace(path)
        return engine

    @staticmethod
    def _discard(*paths: Path) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


def tensorrt_unavailable_reason() -> str | None:
    """None when tensorrt, pycuda and a CUDA GPU are usable; else a one-line reason."""
    try:
        import tensorrt  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except Exception as exc:  # noqa: BLE001  # ImportError, or a broken install raising OSError
        return f"tensorrt is not importable ({type(exc).__name__}: {exc})"
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found,unused-ignore]

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA GPU found"
    except Exception as exc:  # noqa: BLE001  # pycuda raises its own LogicError/RuntimeError
        return f"pycuda/CUDA is not usable ({type(exc).__name__}: {exc})"
    return None


class TensorRTBackend:
    """A TensorRT engine with a dynamic-batch profile; owns all CUDA resources.

    Host buffers are page-locked (so copies are truly async), device buffers
    are sized for ``max_batch``; ``run`` copies H2D, executes and copies D2H
    on one stream, then synchronises. ``close`` frees everything explicitly.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        max_batch: int,
        min_batch: int = 1,
        opt_batch: int | None = None,
        fp16: bool = True,
        device: int = 0,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise SetupError(f"inference.backend=tensorrt is unavailable: {reason}")
        if not model_path.is_file():
            raise SetupError(f"model {model_path} is missing: run `make models`")
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        self._trt = trt
        self._closed = False
        cuda.init()
        gpu = cuda.Device(device)
        self._context = gpu.make_context()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            builder = trt.Builder(self._logger)
            precision = "fp16" if fp16 and builder.platform_has_fast_fp16 else "fp32"
            opt = opt_batch if opt_batch is not None else default_opt_batch(min_batch, max_batch)
            self.identity = EngineIdentity(
                model_sha256=sha256_file(model_path),
                gpu_name=gpu.name(),
                compute_capability=tuple(gpu.compute_capability()),  # type: ignore[arg-type,unused-ignore]
                tensorrt_version=str(trt.__version__),
                precision=precision,
                min_batch=min_batch,
                opt_batch=opt,
                max_batch=max_batch,
            )
            self.precision = precision
            #: the engine runs on the GPU: no CPU thread setting applies.
            self.intra_op_threads: int | None = None
            cache = EngineCache(cache_dir)
            path = cache.lookup(self.identity)
            if path is None:
                path = cache.store(self.identity, self._build(builder, model_path))
            runtime = trt.Runtime(self._logger)
            self._engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                path.unlink(missing_ok=True)
                raise SetupError(f"TensorRT could not deserialize {path}; it was removed, restart to rebuild")
            self._exec = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._allocate()
        except BaseException:
            self._context.pop()
            self._context.detach()
            raise
        self._context.pop()

    def _build(self, builder: Any, model_path: Path) -> bytes:
        trt = self._trt
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(model_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise SetupError(f"TensorRT could not parse {model_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if self.identity.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            shapes = optimisation_profile(
                tuple(tensor.shape),
                self.identity.min_batch,
                self.identity.opt_batch,
                self.identity.max_batch,
            )
            profile.set_shape(tensor.name, *shapes)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise SetupError(f"TensorRT failed to build an engine from {model_path}")
        return bytes(serialized)

    def _allocate(self) -> None:
        trt, cuda = self._trt, self._cuda
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._host: dict[str, Any] = {}
        self._device: dict[str, Any] = {}
        #: the first input's dimensions, -1 (dynamic: the profile's batch) as None.
        self.input_shape: list[int | str | None] = []
        max_batch = self.identity.max_batch
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            shape = list(self._engine.get_tensor_shape(name))
            shape[0] = max_batch
            dtype = trt.nptype(self._engine.get_tensor_dtype(name))
            host = cuda.pagelocked_empty(tuple(shape), dtype)
            self._host[name] = host
            self._device[name] = cuda.mem_alloc(host.nbytes)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if not self._inputs:
                    dims = self._engine.get_tensor_shape(name)
                    self.input_shape = [None if d < 0 else int(d) for d in dims]
                self._inputs.append(name)
            else:
                self._outputs.append(name)

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, self.identity.gpu_name or "cuda", self.precision)

    def run(self, batch: FloatArray) -> dict[str, FloatArray]:
        if self._closed:
            raise RuntimeError("TensorRTBackend is closed")
        cuda = self._cuda
        results: dict[str, list[FloatArray]] = {name: [] for name in self._outputs}
        self._context.push()
        try:
            for start in range(0, len(batch), self.identity.max_batch):
                chunk = batch[start : start + self.identity.max_batch]
                n = len(chunk)
                name = self._inputs[0]
                host_in = self._host[name]
                host_in[:n] = chunk
                self._exec.set_input_shape(name, (n, *host_in.shape[1:]))
                for tensor, buffer in self._device.items():
                    self._exec.set_tensor_address(tensor, int(buffer))
                cuda.memcpy_htod_async(self._device[name], host_in[:n], self._stream)
                self._exec.execute_async_v3(self._stream.handle)
                for out in self._outputs:
                    cuda.memcpy_dtoh_async(self._host[out][:n], self._device[out], self._stream)
                self._stream.synchronize()
                for out in self._outputs:
                    results[out].append(np.array(self._host[out][:n], dtype=np.float32))
        finally:
            self._context.pop()
        return {name: np.concatenate(parts) for name, parts in results.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._context.push()
        try:
            for buffer in self._device.values():
                buffer.free()
            self._device.clear()
            self._host.clear()
            del self._exec, self._engine, self._stream
        finally:
            self._context.pop()
            self._context.detach()
