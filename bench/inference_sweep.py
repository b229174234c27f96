"""Inference bench, the model call alone: images/s per batch size on ONNX Runtime CPU, and on a GPU
TensorRT FP16 vs ONNX Runtime CUDA (skipped without one). Used by :mod:`bench.inference`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.core.settings import Settings
from framepipe.stages.inference.backends import OnnxRuntimeBackend, ort_threads
from framepipe.stages.inference.detectors.blazeface import preprocess

SWEEP = (1, 4, 8, 16, 32)


def _round_robin(
    backend: Any, frames: np.ndarray, batches: tuple[int, ...], repeats: int
) -> dict[int, list[float]]:
    """Images/s per batch size; repeats interleave the sizes so drifting load hits them alike."""
    # Short passes (one per batch size, in turn) and many of them: the median then
    # shrugs off the seconds when other work on the machine takes a core.
    width = max(batches)
    passes = max(1, len(frames) // width)
    chunks: dict[int, list[list[Any]]] = {}
    for batch in batches:
        chunks[batch] = [
            [preprocess(frames[p * width + i : p * width + i + batch]) for i in range(0, width, batch)]
            for p in range(passes)
        ]
        backend.run(chunks[batch][0][0])  # warm-up: ORT sizes its arena per shape
    samples: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(repeats):
        for p in range(passes):
            for batch in batches:
                started = time.perf_counter()
                for chunk in chunks[batch][p]:
                    backend.run(chunk)
                samples[batch].append(width / (time.perf_counter() - started))
    return samples


def _images_per_second(backend: Any, frames: np.ndarray, batch: int, repeats: int) -> list[float]:
    return _round_robin(backend, frames, (batch,), repeats)[batch]


def sweep(settings: Settings, frames: np.ndarray, repeats: int, threads: int | None = None) -> dict[str, Any]:
    """Model call only (pre-processing + ORT run) at each batch size, images/s."""
    cfg = settings.inference
    count = ort_threads(cfg.intra_op_threads, cfg.replicas) if threads is None else threads
    backend = OnnxRuntimeBackend(cfg.model_path, count, use_cuda=False)
    samples = _round_robin(backend, frames, SWEEP, repeats)
    backend.close()
    return {str(b): {"fps_samples": v, "fps": float(np.median(v))} for b, v in samples.items()}


def gpu(settings: Settings, frames: np.ndarray, repeats: int, workdir: Path) -> dict[str, Any]:
    """TensorRT FP16 vs ONNX Runtime CUDA at each batch size; skipped without a GPU."""
    from framepipe.stages.inference.tensorrt import TensorRTBackend, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    cfg = settings.inference
    backends: dict[str, Any] = {
        "tensorrt_fp16": TensorRTBackend(cfg.model_path, workdir / "engines", max_batch=max(SWEEP)),
        "onnxruntime_cuda": OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads, use_cuda=True),
    }
    out: dict[str, Any] = {}
    for name, backend in backends.items():
        out[name] = {}
        for batch in SWEEP:
            samples = _images_per_second(backend, frames, batch, repeats)
            out[name][str(batch)] = float(np.median(samples))
        backend.close()
    return out
