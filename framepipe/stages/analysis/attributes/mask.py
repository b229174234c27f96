"""The ``mask`` attribute: none | worn | below_nose, from an ONNX classifier on the aligned chip.

The contract (docs/attributes.md), for any model set as ``analysis.mask_model``:

- input: one float32 tensor ``[N, 3, 150, 150]``: N aligned face chips as the analysis
  stage cuts them (dlib's 5-point alignment, ``get_face_chip`` size 150, padding 0.25),
  RGB, channels first, values ``pixel / 255`` (0..1), no mean or std subtracted. The
  batch dimension may be fixed at 1 or dynamic; the stage sends one tracklet's crops.
- output: the first output, float32 ``[N, 3]``, in the fixed order **none, worn,
  below_nose**: probabilities (rows summing to 1), or logits (a softmax is applied
  when a row has a negative value or does not sum to 1).

The tracklet's reading is the label with the highest mean probability over its crops,
its confidence that mean. The sink follows a track with a decaying vote over its
tracklets, so one odd GOP does not flip the track's value.

The default model is the BASELINE ``mask_baseline.onnx`` that ``make models`` trains on
synthesised masks (:mod:`.mask_baseline`); its measured accuracy is in its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from framepipe.core.errors import SetupError
from framepipe.core.settings import Settings
from framepipe.stages.analysis.attributes import register
from framepipe.stages.analysis.attributes.base import (
    NO_READING,
    FaceAttribute,
    FaceSample,
    Followed,
    Reading,
    TrackState,
)
from framepipe.stages.analysis.attributes.mask_onnx import LABELS, METADATA_KEY

MODEL_FILE = "mask_baseline.onnx"
CHIP = 150
#: how much of a track's earlier votes one more tracklet keeps.
VOTE_DECAY = 0.7
#: the EVENTS type a bare face raises on a camera that requires masks.
NO_MASK_ALERT = "alert.no_mask"


def model_path(settings: Settings) -> Path:
    if settings.analysis.mask_model:
        return Path(settings.analysis.mask_model).expanduser()
    return settings.inference.models_path / MODEL_FILE


def chips_tensor(chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """The contract's input: ``[N, 3, 150, 150]`` float32 RGB in 0..1."""
    batch = np.stack([np.asarray(c, np.uint8) for c in chips]).astype(np.float32) / 255.0
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def as_probabilities(out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    rows = np.asarray(out, np.float32).reshape(len(out), -1)
    if (rows < 0).any() or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
        rows = shifted / shifted.sum(axis=1, keepdims=True)
    return rows


@register
class MaskAttribute(FaceAttribute[None]):
    name = "mask"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.path = model_path(settings)
        self._session: Any = None
        self._input = ""
        self._fixed_batch: int | None = None
        #: the model's own report (the baseline's measured accuracy), if it has one.
        self.report: dict[str, Any] = {}

    def load(self) -> None:
        if not self.path.is_file():
            raise SetupError(
                f"the mask model {self.path} is missing: run `make models` (it builds the baseline) "
                "or set analysis.mask_model to your ONNX classifier (docs/attributes.md)"
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the analysis stage's one worker thread runs it
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the operator
            raise SetupError(
                f"the mask model {self.path} does not load in ONNX Runtime ({type(exc).__name__}); "
                "give an ONNX file that follows the contract in docs/attributes.md"
            ) from None
        (tensor, *_) = session.get_inputs()
        shape, output = list(tensor.shape), session.get_outputs()[0]
        if len(shape) != 4 or [d for d in shape[1:] if isinstance(d, int)] != [3, CHIP, CHIP]:
            raise SetupError(
                f"the mask model {self.path} takes {shape}, the contract is [N, 3, 150, 150] "
                "(RGB chip, 0..1, channels first); see docs/attributes.md"
            )
        if not output.shape or output.shape[-1] != len(LABELS):
            raise SetupError(
                f"the mask model {self.path} gives {output.shape}, the contract is [N, 3] "
                f"({', '.join(LABELS)}); see docs/attributes.md"
            )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self._session, self._input = session, tensor.name
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.report = json.loads(raw) if raw else {}

    def probabilities(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """``[N, 3]`` probabilities of none, worn, below_nose for aligned chips."""
        if self._session is None:
            raise RuntimeError("MaskAttribute.load() has not run")
        batch = chips_tensor(chips)
        if self._fixed_batch is None:
            return as_probabilities(self._session.run(None, {self._input: batch})[0])
        rows = [self._session.run(None, {self._input: batch[i : i + 1]})[0] for i in range(len(batch))]
        return as_probabilities(np.concatenate(rows))

    def read(self, samples: Sequence[FaceSample], side: None) -> Reading:
        chips = [s.chip for s in samples if s.chip.shape == (CHIP, CHIP, 3)]
        if not chips:
            return NO_READING
        mean = self.probabilities(chips).mean(axis=0)
        best = int(mean.argmax())
        return Reading(LABELS[best], float(mean[best]))

    def follow(self, state: TrackState, reading: Reading) -> Followed:
        """A decaying vote: each tracklet adds its confidence to its label. On a camera in
        ``analysis.require_mask``, a track whose vote has been ``none`` for
        ``analysis.no_mask_after_gops`` analysed GOPs in a row raises ``alert.no_mask`` (the
        sink raises each alert once per track); a GOP without a reading neither counts nor resets."""
        if not reading.present or reading.value not in LABELS:
            return Followed(state)
        votes = {label: VOTE_DECAY * float(state.get(label, 0.0)) for label in LABELS}
        votes[str(reading.value)] += reading.confidence
        winner = max(LABELS, key=lambda label: votes[label])
        total = sum(votes.values()) or 1.0
        unmasked = int(state.get("unmasked_gops", 0)) + 1 if winner == "none" else 0
        followed: TrackState = {**votes, "value": winner, "confidence": round(votes[winner] / total, 4)}
        cfg = self.settings.analysis
        alert = (
            NO_MASK_ALERT
            if unmasked >= cfg.no_mask_after_gops and self.camera and cfg.requires_mask(self.camera)
            else None
        )
        return Followed({**followed, "unmasked_gops": unmasked}, alert)
