"""Where framepipe keeps files that outlive a run, independent of the current directory.

Models: ``inference.models_dir`` when it is set to anything but the default. With the
default (``.cache/models``, what ``make models`` builds in a checkout) the first folder
that holds a model wins: ``./.cache/models``, then the checkout this package was imported
from (an editable install: the repository), then the user cache
(``$XDG_CACHE_HOME/framepipe/models``, ``~/.cache/framepipe/models``), which is also
where ``framepipe models build`` writes when none has one, so ``pip install`` users and
scripts in any folder find what was built once.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the ``inference.models_dir`` default: relative, as the Makefile and CI build it.
DEFAULT_MODELS_DIR = ".cache/models"
#: a file whose presence means a folder holds the built models.
MODEL_MARKER = "face_detection_full_range.onnx"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/framepipe`` or ``~/.cache/framepipe``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "framepipe"


def models_dir_candidates() -> list[Path]:
    """Where the default models folder is looked for, in order."""
    checkout = Path(__file__).resolve().parents[2] / DEFAULT_MODELS_DIR
    return [Path(DEFAULT_MODELS_DIR), checkout, user_cache_dir() / "models"]


def resolve_models_dir(configured: str) -> Path:
    """The models folder for the ``inference.models_dir`` setting (see the module docstring)."""
    if configured != DEFAULT_MODELS_DIR:
        return Path(configured).expanduser()
    candidates = models_dir_candidates()
    for folder in candidates:
        if (folder / MODEL_MARKER).is_file():
            return folder
    return candidates[-1]
