"""Shared fixtures: a real nats-server, generated media, the built face model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from framepipe.core.settings import Settings
from framepipe.local.natsserver import NatsServer
from framepipe.media.sample import ClipSpec, make_clip

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / ".cache" / "test-media"
MODELS = REPO / ".cache" / "models"

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


def clip(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        make_clip(path, CLIPS[name])
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The ONNX models built by `make models` (never downloaded by tests)."""
    if not (MODELS / "face_detection_full_range.onnx").is_file():
        pytest.fail("face models missing: run `make models` before the tests", pytrace=False)
    return MODELS


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on free loopback ports."""
    server = NatsServer(store_dir=tmp_path / "jetstream").start(log_file=tmp_path / "nats-server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path, models_dir: Path) -> Settings:
    """Settings pointing at the fixture server and a per-test output dir."""
    return Settings().replace(
        nats={"url": nats_server.url},
        sink={"output_dir": str(tmp_path / "output")},
        inference={"models_dir": str(models_dir)},
        local={"state_dir": str(tmp_path / "state"), "shutdown_grace_s": 15.0},
        decoder={"ack_wait_s": 20.0, "retry_backoff_s": 0.2, "max_deliver": 3},
        encoder={"ack_wait_s": 20.0, "retry_backoff_s": 0.2, "max_deliver": 3},
    )


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _child_logs_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEPIPE_LOG_FORMAT", "json")
    for key in list(os.environ):
        if key.startswith("FRAMEPIPE_") and "__" in key:
            monkeypatch.delenv(key)
