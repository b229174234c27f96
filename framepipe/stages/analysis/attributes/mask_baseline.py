"""Build the mask BASELINE model at ``make models``: synthesised masked faces → a small MLP → ONNX.

No pretrained mask classifier ships in any package, so this trains one from what
packages do ship: real portraits (the face_recognition sdist's test photos, MIT, US
government portraits: Obama ×3, Biden; scikit-image's astronaut, NASA, public domain;
matplotlib's Grace Hopper, US Navy, public domain), with masks drawn on them by
:mod:`.mask_synth` (surgical, cloth, patterned; over the nose or under it), under
random flips, rotations, scales, crops, box offsets, brightness, colour and blur.

The split is by PERSON: the held-out people's photos are never used for training, and
the accuracy per class on their synthesised faces is written into the model's metadata
and printed (docs/attributes.md quotes it). The accuracy is that of synthetic masks on
unseen faces; real masks differ, which is why it is labelled a baseline and why the
model is replaceable (``analysis.mask_model``, contract in :mod:`.mask`).

Run: ``python -m framepipe.stages.analysis.attributes.mask_baseline --models-dir .cache/models``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from framepipe.core.errors import SetupError
from framepipe.stages.analysis.attributes.mask_onnx import COLUMNS, LABELS, POOL, ROWS, export
from framepipe.stages.analysis.attributes.mask_synth import Coverage, draw_mask, random_look

MODEL_FILE = "mask_baseline.onnx"
HIDDEN = 48
FR_SDIST = "face_recognition-1.3.0"
#: person → photos; the held-out people are never seen in training.
PEOPLE = {
    "obama": ("fr:obama.jpg", "fr:obama2.jpg", "fr:obama3.jpg"),
    "astronaut": ("skimage:astronaut.png",),
    "hopper": ("matplotlib:grace_hopper.jpg",),
    "biden": ("fr:biden.jpg",),
}
HELD_OUT = ("biden",)
Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Base:
    """A face photo, cropped around its face, with the face's box and 5 landmarks."""

    person: str
    image: npt.NDArray[np.uint8]
    box: tuple[float, float, float, float]
    landmarks: npt.NDArray[np.float32]


def read_photo(ref: str, photos_dir: Path) -> npt.NDArray[np.uint8]:
    source, _, name = ref.partition(":")
    if source == "fr":
        for tarball in (photos_dir / "sdist" / f"{FR_SDIST}.tar.gz",):
            if tarball.is_file():
                with tarfile.open(tarball) as archive:
                    member = archive.extractfile(f"{FR_SDIST}/tests/test_images/{name}")
                    if member is not None:
                        return _rgb(member.read())
        if (photos_dir / name).is_file():
            return _rgb((photos_dir / name).read_bytes())
        raise SetupError(f"{name} is missing from {photos_dir}: run `make face-photos` first")
    if source == "skimage":
        import skimage

        return _rgb((Path(skimage.__file__).parent / "data" / name).read_bytes())
    import matplotlib

    return _rgb((Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / name).read_bytes())


def _rgb(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as photo:
        return np.ascontiguousarray(np.asarray(photo.convert("RGB")))


def bases(photos_dir: Path, embedder: Any) -> list[Base]:
    """Each photo and its mirror image, cropped to 3 face widths around the face."""
    out: list[Base] = []
    for person, refs in PEOPLE.items():
        for ref in refs:
            full = read_photo(ref, photos_dir)
            (x1, y1, x2, y2), *_ = embedder.detect(full)
            side = x2 - x1
            cx0, cy0 = max(0, round(x1 - side)), max(0, round(y1 - side))
            cx1, cy1 = min(full.shape[1], round(x2 + side)), min(full.shape[0], round(y2 + side))
            crop = np.ascontiguousarray(full[cy0:cy1, cx0:cx1])
            box = (x1 - cx0, y1 - cy0, x2 - cx0, y2 - cy0)
            for image, fbox in ((crop, box), _mirror(crop, box)):
                out.append(Base(person, image, fbox, embedder.crop(image, fbox).landmarks))
    return out


def _mirror(image: npt.NDArray[np.uint8], box: tuple[float, float, float, float]) -> tuple[Any, Any]:
    width = image.shape[1]
    return np.ascontiguousarray(image[:, ::-1]), (width - box[2], box[1], width - box[0], box[3])


def synthesise(base: Base, label: int, rng: np.random.Generator, embedder: Any) -> npt.NDArray[np.uint8]:
    """One augmented aligned chip of ``base`` wearing mask ``LABELS[label]`` (none: bare)."""
    x1, y1, x2, y2 = base.box
    face = x2 - x1
    target = float(rng.uniform(60, 230))
    scale, angle = target / face, math.radians(float(rng.uniform(-12, 12)))
    size = round(target * 3)
    centre_in = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    centre_out = np.array([size / 2, size / 2]) + rng.uniform(-0.1, 0.1, 2) * target
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    inverse = np.linalg.inv(rot)
    offset = centre_in - inverse @ centre_out
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = Image.fromarray(base.image).transform((size, size), Image.Transform.AFFINE, coeffs,
                                                   Image.Resampling.BILINEAR)  # fmt: skip

    def forward(points: Array) -> Array:
        return np.asarray((points - centre_in) @ rot.T + centre_out)

    image = np.asarray(warped)
    landmarks = forward(base.landmarks.astype(np.float64))
    if label:
        coverage: Coverage = "worn" if LABELS[label] == "worn" else "below_nose"
        image = draw_mask(image, landmarks, coverage, random_look(rng), int(rng.integers(1 << 30)))
    image = _photometric(image, rng)
    corners = forward(np.array([[x1, y1], [x2, y2]], np.float64))
    (bx1, by1), (bx2, by2) = corners.min(axis=0), corners.max(axis=0)
    jitter = rng.uniform(-0.08, 0.08, 2) * target
    grow = float(rng.uniform(0.92, 1.15))
    cx, cy = (bx1 + bx2) / 2 + jitter[0], (by1 + by2) / 2 + jitter[1]
    half = (bx2 - bx1) * grow / 2
    chip: npt.NDArray[np.uint8] = embedder.crop(image, (cx - half, cy - half, cx + half, cy + half)).chip
    return chip


def _photometric(image: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    picture = Image.fromarray(image)
    if rng.random() < 0.4:
        picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.4))))
    out = np.asarray(picture, np.float32)
    gain = float(rng.uniform(0.6, 1.35)) * rng.uniform(0.9, 1.1, 3)
    contrast = float(rng.uniform(0.75, 1.2))
    mean = out.mean()
    out = (out - mean) * contrast + mean
    out = out * gain + rng.normal(0, 3.0, out.shape)
    adjusted: npt.NDArray[np.uint8] = np.clip(out, 0, 255).astype(np.uint8)
    return adjusted


def features(chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """What the ONNX graph computes before its MLP, in numpy: (n, 150, 150, 3) → (n, 1020)."""
    x = chips.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    x = x / np.sqrt((x * x).mean(axis=(1, 2, 3), keepdims=True) + 1e-6)
    lower = x[:, :, ROWS[0] : ROWS[1], COLUMNS[0] : COLUMNS[1]]
    n, c, h, w = lower.shape
    pooled = lower.reshape(n, c, h // POOL, POOL, w // POOL, POOL).mean(axis=(3, 5))
    return np.asarray(pooled.reshape(n, -1), np.float32)


@dataclass
class Mlp:
    mean: Array
    std: Array
    w1: Array
    b1: Array
    w2: Array
    b2: Array

    def probabilities(self, x: Array) -> Array:
        hidden = np.maximum(((x - self.mean) / self.std) @ self.w1 + self.b1, 0.0)
        logits = hidden @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return np.asarray(e / e.sum(axis=1, keepdims=True))


def train(x: Array, y: Array, seed: int = 0, epochs: int = 40) -> Mlp:
    """A one-hidden-layer MLP, softmax cross-entropy, Adam, weight decay, in numpy."""
    rng = np.random.default_rng(seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    z = (x - mean) / std
    n, dims = z.shape
    params = [
        rng.normal(0, math.sqrt(2 / dims), (dims, HIDDEN)), np.zeros(HIDDEN),
        rng.normal(0, math.sqrt(2 / HIDDEN), (HIDDEN, len(LABELS))), np.zeros(len(LABELS)),
    ]  # fmt: skip
    moments = [np.zeros_like(p) for p in params] + [np.zeros_like(p) for p in params]
    onehot = np.eye(len(LABELS))[y]
    step, lr, decay = 0, 1e-3, 3e-4
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, 64):
            idx = order[start : start + 64]
            batch = z[idx] + rng.normal(0, 0.1, (len(idx), dims))  # input noise: a regulariser
            h_pre = batch @ params[0] + params[1]
            h = np.maximum(h_pre, 0.0)
            logits = h @ params[2] + params[3]
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            g_logits = (p - onehot[idx]) / len(idx)
            g_h = (g_logits @ params[2].T) * (h_pre > 0)
            grads = [batch.T @ g_h + decay * params[0], g_h.sum(0), h.T @ g_logits + decay * params[2],
                     g_logits.sum(0)]  # fmt: skip
            step += 1
            for i, g in enumerate(grads):
                m, v = moments[i], moments[i + 4]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
                params[i] -= lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return Mlp(mean, std, *params)


def accuracy(model: Mlp, x: Array, y: Array) -> dict[str, float]:
    predicted = model.probabilities(x).argmax(axis=1)
    per_class = {LABELS[k]: round(float((predicted[y == k] == k).mean()), 4) for k in range(len(LABELS))}
    return {**per_class, "overall": round(float((predicted == y).mean()), 4)}


def dataset(chosen: list[Base], per_class: int, seed: int, embedder: Any) -> Iterator[tuple[Array, int]]:
    rng = np.random.default_rng(seed)
    for base in chosen:
        for label in range(len(LABELS)):
            for _ in range(per_class):
                yield synthesise(base, label, rng, embedder), label


def collect(chosen: list[Base], per_class: int, seed: int, embedder: Any) -> tuple[Array, Array, Array]:
    chips, labels = zip(*dataset(chosen, per_class, seed, embedder), strict=True)
    stacked = np.stack(chips)
    return stacked, features(stacked), np.array(labels)


def build(
    models_dir: Path, photos_dir: Path, per_class: int = 50, held_out_per_class: int = 50
) -> dict[str, Any]:
    """Synthesise, train on the training people, measure on the held-out people, write ONNX."""
    from framepipe.stages.analysis.embedder import FaceEmbedder

    started = time.perf_counter()
    embedder = FaceEmbedder()
    every = bases(photos_dir, embedder)
    training = [b for b in every if b.person not in HELD_OUT]
    held_out = [b for b in every if b.person in HELD_OUT]
    _, x, y = collect(training, per_class, 1, embedder)
    _, hx, hy = collect(held_out, held_out_per_class, 2, embedder)
    model = train(x, y)
    report = {
        "baseline": True,
        "labels": list(LABELS),
        "held_out_people": list(HELD_OUT),
        "training_people": sorted({b.person for b in training}),
        "training_faces": len(y),
        "held_out_faces": len(hy),
        "held_out_accuracy": accuracy(model, hx, hy),
        "training_accuracy": accuracy(model, x, y),
    }
    models_dir.mkdir(parents=True, exist_ok=True)
    export(model, models_dir / MODEL_FILE, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def cross_validate(photos_dir: Path, per_class: int = 50) -> dict[str, dict[str, float]]:
    """Leave one person out: each person's accuracy per class when the rest trained."""
    from framepipe.stages.analysis.embedder import FaceEmbedder

    embedder = FaceEmbedder()
    every = bases(photos_dir, embedder)
    _, x, y = collect(every, per_class, 3, embedder)
    people = np.array([b.person for b in every for _ in range(len(LABELS) * per_class)])
    out: dict[str, dict[str, float]] = {}
    for person in PEOPLE:
        model = train(x[people != person], y[people != person])
        out[person] = accuracy(model, x[people == person], y[people == person])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the mask baseline (ONNX) from synthesised faces.")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--photos-dir", type=Path, default=Path(".cache/face-photos"))
    parser.add_argument("--cross-validate", action="store_true", help="leave-one-person-out figures only")
    args = parser.parse_args(argv)
    try:
        if args.cross_validate:
            print(json.dumps(cross_validate(args.photos_dir)))
            return 0
        report = build(args.models_dir, args.photos_dir)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.models_dir / MODEL_FILE}: {json.dumps(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
