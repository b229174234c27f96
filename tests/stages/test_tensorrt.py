"""TensorRT backend: the GPU-free parts always; the engine itself only with tensorrt + a GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from framepipe.core.errors import SetupError
from framepipe.stages.inference.backends import select_backend
from framepipe.stages.inference.tensorrt import (
    EngineCache,
    EngineIdentity,
    TensorRTBackend,
    default_opt_batch,
    engine_cache_key,
    optimisation_profile,
    sha256_file,
    tensorrt_unavailable_reason,
)

IDENTITY = EngineIdentity(
    model_sha256="ab" * 32,
    gpu_name="NVIDIA H100",
    compute_capability=(9, 0),
    tensorrt_version="10.3.0",
    precision="fp16",
    min_batch=1,
    opt_batch=8,
    max_batch=16,
)


def test_cache_key_is_stable_and_changes_with_every_field() -> None:
    """Equal identities give one engine cache key; changing any single field gives another."""
    assert engine_cache_key(IDENTITY) == engine_cache_key(dataclasses.replace(IDENTITY))
    changes = {
        "model_sha256": "cd" * 32,
        "gpu_name": "NVIDIA A10",
        "compute_capability": (8, 6),
        "tensorrt_version": "10.4.0",
        "precision": "fp32",
        "min_batch": 2,
        "opt_batch": 4,
        "max_batch": 32,
    }
    keys = {engine_cache_key(IDENTITY)}
    for field, value in changes.items():
        keys.add(engine_cache_key(dataclasses.replace(IDENTITY, **{field: value})))
    assert len(keys) == len(changes) + 1


def test_identity_validates_precision_and_batch_range() -> None:
    """An unknown precision or an opt batch outside min..max is refused."""
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(IDENTITY, precision="int8")
    with pytest.raises(ValueError, match="batch range"):
        dataclasses.replace(IDENTITY, opt_batch=32)


def test_model_hash_is_the_file_sha256(tmp_path: Path) -> None:
    """The model hash is the SHA-256 of the file, whatever the read chunk size."""
    import hashlib

    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph" * 1000)
    assert sha256_file(model, chunk=7) == hashlib.sha256(b"graph" * 1000).hexdigest()


def test_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    """A stored engine is found again; another identity, a stale meta or a torn write is a miss."""
    cache = EngineCache(tmp_path / "engines")
    assert cache.lookup(IDENTITY) is None
    path = cache.store(IDENTITY, b"serialized-engine")
    assert cache.lookup(IDENTITY) == path
    # Another GPU / TensorRT version: a different key, so a miss (the old file stays for its owner).
    other = dataclasses.replace(IDENTITY, tensorrt_version="10.4.0")
    assert cache.lookup(other) is None
    assert cache.lookup(IDENTITY) == path
    # A meta that no longer matches its key (stale/tampered): removed, never loaded.
    engine, meta = cache.paths(IDENTITY)
    meta.write_text(meta.read_text().replace("NVIDIA H100", "NVIDIA A100"))
    assert cache.lookup(IDENTITY) is None
    assert not engine.exists()
    assert not meta.exists()
    # A torn write (engine without meta, or an empty engine) is a miss too.
    cache.store(IDENTITY, b"x")
    meta.unlink()
    assert cache.lookup(IDENTITY) is None
    assert not engine.exists()
    cache.store(IDENTITY, b"")
    assert cache.lookup(IDENTITY) is None


def test_optimisation_profile_shapes() -> None:
    """The dynamic batch axis gets min/opt/max; a bad range or a second dynamic axis is refused."""
    assert optimisation_profile((-1, 3, 192, 192), 1, 8, 32) == (
        (1, 3, 192, 192),
        (8, 3, 192, 192),
        (32, 3, 192, 192),
    )
    with pytest.raises(ValueError, match="batch range"):
        optimisation_profile((-1, 3, 192, 192), 4, 2, 8)
    with pytest.raises(ValueError, match="fixed"):
        optimisation_profile((-1, 3, -1, 192), 1, 1, 8)
    assert [default_opt_batch(1, m) for m in (1, 4, 16, 20, 32)] == [1, 2, 8, 8, 16]


def test_backend_selection_and_fallback() -> None:
    """TensorRT is chosen when asked for; unavailable, it falls back if allowed, else one SetupError line."""
    assert select_backend("onnxruntime", None, False) == "onnxruntime"
    assert select_backend("tensorrt", None, False) == "tensorrt"
    assert select_backend("tensorrt", "no CUDA GPU found", True) == "onnxruntime"
    with pytest.raises(SetupError, match="tensorrt is unavailable: no CUDA GPU found") as info:
        select_backend("tensorrt", "no CUDA GPU found", False)
    assert "\n" not in str(info.value)


REASON = tensorrt_unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=f"TensorRT GPU test: {REASON}")
def test_tensorrt_matches_onnxruntime(models_dir: Path, tmp_path: Path) -> None:  # pragma: no cover
    """On a GPU the engine matches ONNX Runtime and is built once, then loaded from the cache."""
    from framepipe.stages.inference.backends import OnnxRuntimeBackend

    model = models_dir / "face_detection_full_range.onnx"
    batch = np.random.default_rng(0).uniform(-1, 1, (5, 3, 192, 192)).astype(np.float32)
    reference = OnnxRuntimeBackend(model).run(batch)
    trt = TensorRTBackend(model, tmp_path, max_batch=8, fp16=False)
    try:
        got = trt.run(batch)
    finally:
        trt.close()
    for name, want in reference.items():
        np.testing.assert_allclose(got[name], want, atol=1e-2, rtol=1e-2)
    # Second construction loads the cached engine instead of building it.
    assert len(list(tmp_path.glob("*.engine"))) == 1
    TensorRTBackend(model, tmp_path, max_batch=8, fp16=False).close()
    assert len(list(tmp_path.glob("*.engine"))) == 1


def test_missing_tensorrt_is_a_one_line_setup_error(tmp_path: Path) -> None:
    """Without TensorRT, constructing its backend is a SetupError that names inference.backend."""
    if REASON is None:  # pragma: no cover
        pytest.skip("TensorRT is available here")
    with pytest.raises(SetupError, match=r"inference\.backend=tensorrt is unavailable"):
        TensorRTBackend(tmp_path / "m.onnx", tmp_path, max_batch=4)
