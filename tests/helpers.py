"""What several test modules share: repo paths, generated clips, reading what the pipeline wrote.

Fixtures live in ``tests/conftest.py``; everything else that more than one test
module uses lives here, so no test module imports another.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from nats.js import JetStreamContext

from framepipe.core import bus
from framepipe.core.messages import Headers
from framepipe.core.runner import Runner
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import free_port
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.decoder import Decoder

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / ".cache" / "test-media"
MODELS = REPO / ".cache" / "models"
#: the file whose absence means `make models` has not been run.
FACE_MODEL = MODELS / "face_detection_full_range.onnx"
#: npm packages of the contract checks (`make contract-tools`), and the Node programs using them.
NODE_MODULES = REPO / ".cache" / "npm-contract" / "node_modules"
NODE_PROGRAMS = REPO / "tests" / "node"
#: real portraits from the face_recognition package's sdist (`make face-photos`): two
#: different photos of Barack Obama and one of Joe Biden (official US government photos).
FACE_PHOTOS = REPO / ".cache" / "face-photos"
#: a square around each portrait's face (dlib's HOG box, enlarged), scaled to 512×512 for clips.
PORTRAIT_CROPS = {
    "obama2.jpg": (4, 124, 604, 724),
    "biden.jpg": (280, 101, 880, 701),
}

# Small clips keep the suite fast on 2 cores; each is generated once and cached.
CLIPS = {
    "h264_bframes.mp4": ClipSpec(width=640, height=360, seconds=3.0, gop=30, bframes=2),
    "hevc_odd.mkv": ClipSpec(
        width=641, height=361, seconds=2.0, gop=20, bframes=3, codec="libx265", pix_fmt="yuv444p"
    ),
    "hevc_open_gop.mkv": ClipSpec(
        width=320, height=240, seconds=2.0, gop=15, bframes=3, codec="libx265", open_gop=True
    ),
    "h264_odd_long_gop.mp4": ClipSpec(
        width=481, height=271, seconds=3.0, gop=75, bframes=0, pix_fmt="yuv444p"
    ),
}

#: the end-to-end and fault tests' clip: short GOPs, so a run has many of them in flight.
FACES = ClipSpec(width=640, height=360, seconds=4.0, gop=15, bframes=2)


def clip(name: str) -> Path:
    """One of ``CLIPS``, generated into the media cache the first time it is asked for."""
    path = MEDIA / name
    if not path.is_file():
        make_clip(path, CLIPS[name])
    return path


def faces_clip() -> Path:
    """The ``FACES`` clip, generated once into the media cache."""
    path = MEDIA / "faces_short_gops.mp4"
    if not path.is_file():
        make_clip(path, FACES)
    return path


def face_photo(name: str) -> Path:
    """One of the portraits `make face-photos` unpacks (never downloaded by a test)."""
    path = FACE_PHOTOS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make face-photos` before the tests")
    return path


def portrait_clip(name: str, spec: ClipSpec) -> Path:
    """A clip panning the square around ``name``'s face (``PORTRAIT_CROPS``), made once."""
    from PIL import Image

    path = MEDIA / f"portrait_{Path(name).stem}_{spec.cache_name}"
    if not path.is_file():
        with Image.open(face_photo(name)) as photo:
            square = photo.convert("RGB").crop(PORTRAIT_CROPS[name]).resize((512, 512))
        make_clip(path, spec, np.asarray(square))
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """Every line of a JSON-lines file (the sink's detections.jsonl), parsed."""
    return [json.loads(line) for line in path.read_text().splitlines()]


async def decode_until_drained(js: JetStreamContext, settings: Settings, timeout_s: float) -> None:
    """Run a real decoder (its runner, in this process) until VIDEO's decoder consumer has
    nothing pending or unacknowledged, then stop it."""
    runner = Runner(Decoder(settings), settings)
    task = asyncio.create_task(runner.run(serve_health=False))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        info = await js.consumer_info(Names.VIDEO, Names.DECODER)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        assert asyncio.get_running_loop().time() < deadline, "the decoder did not get through"
        await asyncio.sleep(0.2)
    runner.request_stop()
    await asyncio.wait_for(task, 15.0)


def output_gops(settings: Settings, camera: str) -> Counter[int]:
    """How many times each GOP of ``camera`` is stored in the OUTPUT stream."""

    async def scan() -> Counter[int]:
        nc = await bus.connect(settings, "test-scan", retry_initial=False)
        try:
            js = nc.jetstream()
            info = await js.stream_info(Names.OUTPUT)
            seen: Counter[int] = Counter()
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(Names.OUTPUT, seq)
                if raw.headers and raw.headers.get(Headers.CAMERA) == camera:
                    seen[int(raw.headers[Headers.GOP])] += 1
            return seen
        finally:
            await nc.close()

    return asyncio.run(scan())


def masked_portrait_clip(name: str, spec: ClipSpec) -> Path:
    """:func:`portrait_clip` with a light-blue surgical mask drawn over nose and mouth (the
    mask baseline's drawing, from the 5 landmarks dlib finds on the photo), made once."""
    from PIL import Image

    from framepipe.stages.analysis.attributes.mask_synth import MaskLook, draw_mask
    from framepipe.stages.analysis.embedder import FaceEmbedder, read_image

    path = MEDIA / f"masked_{Path(name).stem}_{spec.cache_name}"
    if not path.is_file():
        photo = read_image(face_photo(name))
        embedder = FaceEmbedder()
        (box,) = embedder.detect(photo)
        landmarks = embedder.crop(photo, box).landmarks
        masked = draw_mask(photo, landmarks, "worn", MaskLook("surgical", (155, 200, 232), (0, 0, 0)))
        square = Image.fromarray(masked).crop(PORTRAIT_CROPS[name]).resize((512, 512))
        make_clip(path, spec, np.asarray(square))
    return path


def run_framepipe(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``framepipe ARGS`` in ``tmp_path`` with its own state folder and no NATS around."""
    env = {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        "FRAMEPIPE_NATS__URL": f"nats://127.0.0.1:{free_port()}",
    }
    return subprocess.run(
        [sys.executable, "-m", "framepipe", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
