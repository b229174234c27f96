"""Build the mask BASELINE model at ``make models``: synthesised masked faces → a small MLP → ONNX.

No pretrained mask classifier ships in any package, so this trains one from what
packages do ship: real portraits (the face_recognition sdist's test photos, MIT, US
government portraits: Obama ×3, Biden; scikit-image's astronaut, NASA, public domain;
matplotlib's Grace Hopper, US Navy, public domain), with masks drawn on them by
:mod:`.mask_synth` (surgical, cloth, patterned; over the nose or under it), bare faces
often given a beard, scarf or hand that is not a mask, all under lighting and camera
changes (:mod:`.mask_augment`) and random flips, rotations, scales, crops, box offsets.

The accuracy is measured by PERSON, leave-one-person-out: for each person, a model
trained on the others scores that person's synthesised faces; the mean over people per
class is the headline, written into the model's metadata and printed (docs/attributes.md
quotes it). The shipped model is then trained on everyone. The accuracy is that of
synthetic masks on unseen faces; real masks differ, which is why it is labelled a
baseline and why the model is replaceable (``analysis.mask_model``, contract in :mod:`.mask`).

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from framepipe.core.errors import SetupError
from framepipe.stages.analysis.attributes.mask_augment import occlude, photometric, random_mask_colour
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
#: faces synthesised per class and person (≈ 1 min on 2 loaded cores for all of them).
PER_CLASS = 100
FOLDS_DIR = "mask_baseline_folds"
HELD_OUT = "leave-one-person-out: each person scored by a model trained on the others, mean over people"
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

    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / name
    if not sample.is_file():  # the container image's build keeps a copy: its venv has no sample data
        sample = photos_dir / name
    return _rgb(sample.read_bytes())


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
    """One augmented aligned chip of ``base`` wearing mask ``LABELS[label]`` (none: bare, and
    about half the time with a beard, moustache, scarf or hand: :func:`.mask_augment.occlude`)."""
    x1, y1, x2, y2 = base.box
    face = x2 - x1
    target = float(rng.uniform(45, 240))
    scale, angle = target / face, math.radians(float(rng.uniform(-20, 20)))
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
        look = random_look(rng)
        if rng.random() < 0.3:
            look = replace(look, colour=random_mask_colour(rng))
        image = draw_mask(image, landmarks, coverage, look, int(rng.integers(1 << 30)))
    elif rng.random() < 0.5:
        image = occlude(image, landmarks, rng)
    image = photometric(image, rng)
    corners = forward(np.array([[x1, y1], [x2, y2]], np.float64))
    (bx1, by1), (bx2, by2) = corners.min(axis=0), corners.max(axis=0)
    jitter = rng.uniform(-0.08, 0.08, 2) * target
    grow = float(rng.uniform(0.9, 1.18))
    cx, cy = (bx1 + bx2) / 2 + jitter[0], (by1 + by2) / 2 + jitter[1]
    half = (bx2 - bx1) * grow / 2
    chip: npt.NDArray[np.uint8] = embedder.crop(image, (cx - half, cy - half, cx + half, cy + half)).chip
    return chip


def features(chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """What the ONNX graph computes before its MLP, in numpy: (n, 150, 150, 3) → (n, FEATURES).

    The nose-to-chin region of the self-normalised chip, average-pooled (colour), and the
    pooled magnitude of its grey gradients (Sobel x and y): nostrils, lips and mouth corners
    are edges; a mask is a smooth surface with edges at its rim."""
    x = chips.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    x = x / np.sqrt((x * x).mean(axis=(1, 2, 3), keepdims=True) + 1e-6)
    lower = x[:, :, ROWS[0] : ROWS[1], COLUMNS[0] : COLUMNS[1]]
    n, c, h, w = lower.shape
    pooled = lower.reshape(n, c, h // POOL, POOL, w // POOL, POOL).mean(axis=(3, 5))
    grey = lower.mean(axis=1)
    gx = (grey[:, :-2, 2:] - grey[:, :-2, :-2]) + 2 * (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) + (
        grey[:, 2:, 2:] - grey[:, 2:, :-2])  # fmt: skip
    gy = (grey[:, 2:, :-2] - grey[:, :-2, :-2]) + 2 * (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) + (
        grey[:, 2:, 2:] - grey[:, :-2, 2:])  # fmt: skip
    edges = np.abs(np.stack([gx, gy], axis=1))
    gh, gw = (h - 2) // POOL, (w - 2) // POOL
    edges = edges[:, :, : gh * POOL, : gw * POOL].reshape(n, 2, gh, POOL, gw, POOL).mean(axis=(3, 5))
    return np.asarray(np.concatenate([pooled.reshape(n, -1), edges.reshape(n, -1)], axis=1), np.float32)


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


def dataset(every: list[Base], per_class: int, seed: int, embedder: Any) -> Iterator[tuple[Array, int, str]]:
    """``per_class`` faces of each class for each person, spread over the person's photos."""
    rng = np.random.default_rng(seed)
    for person in PEOPLE:
        own = [b for b in every if b.person == person]
        for label in range(len(LABELS)):
            for i in range(per_class):
                yield synthesise(own[i % len(own)], label, rng, embedder), label, person


def collect(every: list[Base], per_class: int, seed: int, embedder: Any) -> tuple[Array, Array, Array]:
    """Features, labels and the person of each synthesised face."""
    chips, labels, people = zip(*dataset(every, per_class, seed, embedder), strict=True)
    return features(np.stack(chips)), np.array(labels), np.array(people)


Scores = dict[str, dict[str, float]]


def leave_one_person_out(x: Array, y: Array, people: Array) -> tuple[Scores, dict[str, Mlp]]:
    """Each person's accuracy per class from a model trained on everyone else (and those models)."""
    scores: Scores = {}
    folds: dict[str, Mlp] = {}
    for person in PEOPLE:
        folds[person] = train(x[people != person], y[people != person])
        scores[person] = accuracy(folds[person], x[people == person], y[people == person])
    return scores, folds


def mean_over_people(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """The headline: each class's accuracy on people the model never saw, every person weighing the same."""
    keys = (*LABELS, "overall")
    return {k: round(float(np.mean([s[k] for s in scores.values()])), 4) for k in keys}


def build(models_dir: Path, photos_dir: Path, per_class: int = PER_CLASS) -> dict[str, Any]:
    """Synthesise, measure leave-one-person-out, train on everyone, write the ONNX files.

    ``mask_baseline.onnx`` is trained on every person; its held-out figure is the
    leave-one-person-out mean, measured with the same recipe. Each fold's model (trained
    without one person) is written too (``mask_baseline_folds/<person>.onnx``) so that the
    tests check that figure on faces of people a model never saw."""
    from framepipe.stages.analysis.embedder import FaceEmbedder

    started = time.perf_counter()
    embedder = FaceEmbedder()
    every = bases(photos_dir, embedder)
    x, y, people = collect(every, per_class, 1, embedder)
    scores, folds = leave_one_person_out(x, y, people)
    model = train(x, y)
    report: dict[str, Any] = {
        "baseline": True,
        "labels": list(LABELS),
        "held_out": HELD_OUT,
        "held_out_people": [],
        "training_people": list(PEOPLE),
        "training_faces": len(y),
        "held_out_accuracy": mean_over_people(scores),
        "leave_one_person_out": scores,
        "training_accuracy": accuracy(model, x, y),
    }
    models_dir.mkdir(parents=True, exist_ok=True)
    export(model, models_dir / MODEL_FILE, report)
    (models_dir / FOLDS_DIR).mkdir(exist_ok=True)
    for person, fold in folds.items():
        fold_report = {
            **report,
            "held_out": f"fold of the leave-one-person-out check: {person} never seen",
            "held_out_people": [person],
            "training_people": [p for p in PEOPLE if p != person],
            "held_out_accuracy": scores[person],
            "training_faces": int((people != person).sum()),
            "training_accuracy": accuracy(fold, x[people != person], y[people != person]),
        }
        export(fold, models_dir / FOLDS_DIR / f"{person}.onnx", fold_report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the mask baseline (ONNX) from synthesised faces.")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--photos-dir", type=Path, default=Path(".cache/face-photos"))
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="faces per class and person")
    args = parser.parse_args(argv)
    try:
        report = build(args.models_dir, args.photos_dir, args.per_class)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.models_dir / MODEL_FILE}: {json.dumps(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
