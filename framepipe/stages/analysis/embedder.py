"""Face descriptors with dlib: 5-point alignment, then the 128-D ResNet descriptor.

Both models ship in the ``face-recognition-models`` package (dlib's author put them
in the public domain; the descriptor is 99.38 % on LFW); dlib itself comes from the
prebuilt ``dlib-bin`` wheel. Nothing is downloaded. The 68-point landmark model in
the same package is never loaded: its training data (iBUG 300-W) forbids commercial use.

The pipeline's faces come with BlazeFace boxes, which the 5-point predictor takes as
they are (on the astronaut photo the descriptor from the BlazeFace box and the one
from dlib's own HOG box differ by 0.035, against the 0.6 threshold). Enrolment
photos have no box yet: dlib's HOG frontal face detector (part of dlib, no model
file) finds it, and a photo must show exactly one face of at least
``analysis.min_face_px``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from framepipe.core.errors import ConfigError, SetupError
from framepipe.core.gallery import DESCRIPTOR_SIZE

Box = tuple[float, float, float, float]
Image = npt.NDArray[np.uint8]
#: dlib's aligned chip: 150×150 with 25 % padding, what the ResNet was trained on.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: HOG detections below this score are not faces (the astronaut photo's suit patch: 0.12).
HOG_MIN_SCORE = 0.5
#: enrolment photos larger than this are scaled down for detection (a 2333-px portrait
#: takes 2.3 s at full size); the descriptor is still computed at full resolution.
DETECT_MAX_SIDE = 1280


class EnrolmentError(ConfigError):
    """An enrolment photo cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Crop:
    """One aligned face: its descriptor input and how good a view it is."""

    chip: Image
    #: 0..1: nose centred between the eyes (1) or turned to one side (0).
    frontalness: float
    #: variance of the chip's Laplacian (blur lowers it).
    sharpness: float
    #: dlib's 5 landmarks (eye corners 0-1 and 2-3, nose 4) in the frame's pixels, (5, 2).
    landmarks: npt.NDArray[np.float32] = dataclasses.field(
        default_factory=lambda: np.zeros((5, 2), np.float32)
    )


#: the model files inside the face-recognition-models package (public domain); never the
#: 68-point landmark model, whose training data forbids commercial use.
FIVE_POINT_MODEL = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


@functools.cache
def _dlib() -> tuple[Any, Path]:
    """dlib and the folder of face-recognition-models' files.

    The package is located, not imported: its ``__init__`` needs ``pkg_resources``
    (setuptools), which the runtime image does not ship.
    """
    try:
        import dlib
    except ImportError as exc:
        raise SetupError(
            f"face recognition needs dlib ({exc.name} is missing): "
            "pip install 'framepipe[faces]' (dlib-bin, face-recognition-models)"
        ) from None
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(spec.origin).parent / "models" if spec is not None and spec.origin else None
    if models is None or not all((models / name).is_file() for name in (FIVE_POINT_MODEL, DESCRIPTOR_MODEL)):
        raise SetupError(
            "face recognition needs dlib's models (face-recognition-models is missing or incomplete): "
            "pip install 'framepipe[faces]' (dlib-bin, face-recognition-models)"
        )
    return dlib, models


class FaceEmbedder:
    """Loaded once per process: the landmark model, the descriptor network, the HOG detector."""

    def __init__(self) -> None:
        dlib, models = _dlib()
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(str(models / FIVE_POINT_MODEL))
        self.network = dlib.face_recognition_model_v1(str(models / DESCRIPTOR_MODEL))
        self._detector: Any = None

    # -- pipeline faces ------------------------------------------------------------
    def crop(self, image: Image, box: Box) -> Crop:
        """Align the face in ``box`` of an RGB image into dlib's 150×150 chip."""
        x1, y1, x2, y2 = (round(v) for v in box)
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        shape = self.shape_predictor(image, rect)
        chip = np.asarray(self._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        return Crop(chip, _frontalness(shape), _sharpness(chip), _points(shape))

    def describe(self, chips: list[Image]) -> npt.NDArray[np.float32]:
        """Descriptors of aligned chips, one network call for all of them: (n, 128)."""
        if not chips:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        out = self.network.compute_face_descriptor(chips)
        descriptors: npt.NDArray[np.float32] = np.asarray([np.asarray(d) for d in out], dtype=np.float32)
        return descriptors

    # -- enrolment photos ------------------------------------------------------------
    def detect(self, image: Image) -> list[Box]:
        """Faces in a photo (HOG), in the photo's pixels."""
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        small = image if scale == 1.0 else _resize(image, scale)
        # Upsample small photos twice so faces down to ~20 px are found (and refused as
        # too small with a clear message rather than "no face").
        upsample = 2 if max(small.shape[:2]) <= 800 else 1
        rects, scores, _ = self._detector.run(small, upsample, 0.0)
        return [
            (r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale)
            for r, score in zip(rects, scores, strict=True)
            if score >= HOG_MIN_SCORE
        ]

    def enrol(self, path: Path, min_face_px: int) -> npt.NDArray[np.float32]:
        """The descriptor of the one face in the photo at ``path``; an EnrolmentError otherwise."""
        return self.enrol_image(read_image(path), str(path), min_face_px)

    def enrol_image(self, image: Image, path: str, min_face_px: int) -> npt.NDArray[np.float32]:
        """:meth:`enrol` of an RGB array (``path`` names it in errors)."""
        faces = self.detect(image)
        if not faces:
            raise EnrolmentError(
                f"{path}: no face found; use a photo of one person facing the camera, "
                f"the face at least {min_face_px}px wide"
            )
        if len(faces) > 1:
            raise EnrolmentError(
                f"{path}: {len(faces)} faces found; crop the photo to the one person to enrol"
            )
        x1, y1, x2, y2 = faces[0]
        width = round(min(x2 - x1, y2 - y1))
        if width < min_face_px:
            raise EnrolmentError(
                f"{path}: the face is {width}px wide, at least {min_face_px}px are needed "
                "(analysis.min_face_px); use a larger or closer photo"
            )
        descriptor: npt.NDArray[np.float32] = self.describe([self.crop(image, faces[0]).chip])[0]
        return descriptor


def read_image(path: Path) -> Image:
    """An RGB array of the photo at ``path``; an EnrolmentError when it is not one."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as photo:
            photo.load()
            return np.ascontiguousarray(np.asarray(photo.convert("RGB")))
    except FileNotFoundError:
        raise EnrolmentError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EnrolmentError(
            f"{path}: cannot read it as an image ({type(exc).__name__}); give a JPEG or PNG photo"
        ) from None


def _resize(image: Image, scale: float) -> Image:
    from PIL import Image as PILImage

    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(PILImage.fromarray(image).resize(size, PILImage.Resampling.BILINEAR))


def _points(shape: Any) -> npt.NDArray[np.float32]:
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float32)


def _frontalness(shape: Any) -> float:
    """dlib's 5 points are eye corners (0-1 one eye, 2-3 the other) and the nose (4)."""
    points = _points(shape)
    eye_a, eye_b, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    span = float(np.linalg.norm(eye_a - eye_b))
    if span <= 0:
        return 0.0
    # Where the nose projects onto the eye line: 0.5 when the face looks straight on.
    t = float(np.dot(nose - eye_a, eye_b - eye_a)) / (span * span)
    return float(max(0.0, 1.0 - 2.0 * abs(t - 0.5)))


def _sharpness(chip: Image) -> float:
    grey = chip.astype(np.float32).mean(axis=2)
    laplacian = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    return float(laplacian.var())
