"""The inference stage through JetStream with a YOLO model chosen in config, detect_fps on
the wire, and the backend it reports in metrics and `framepipe status`."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from framepipe.core import bus, health, messages
from framepipe.core.bus import setup_topology
from framepipe.core.messages import DetectionsMessage, FrameBatch
from framepipe.core.runner import Runner
from framepipe.core.settings import ConfigError, Settings
from framepipe.core.topology import Names
from framepipe.local.runtime import ProcessEntry, Runtime
from framepipe.local.status import collect_status, render_status
from framepipe.stages.inference.detectors import build_detector
from framepipe.stages.inference.stage import Inference

pytestmark = pytest.mark.integration

SIZE = 16  # model input; sources are 32×32, so boxes come back scaled ×2
SOURCE = 32
# cx, cy, w, h, objectness (taken from the image), person, car
HEAD = np.array(
    [
        [8, 8, 4, 8, 0, 0.95, 0.05],  # a person at (6, 4, 10, 12)
        [3, 3, 2, 2, 0, 0.10, 0.90],  # a car: dropped by classes = "0"
    ],
    dtype=np.float32,
)


def yolo_graph(path: Path) -> Path:
    """A tiny YOLOv5-style graph: image [N,3,16,16] → head [N,2,7] whose objectness
    column is the image's mean brightness, so bright frames hold objects and black
    frames none, and each frame's detections show it was routed back correctly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    objectness_column = np.zeros((1, *HEAD.shape), dtype=np.float32)
    objectness_column[..., 4] = 1.0
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
        helper.make_node("Reshape", ["mean", "shape3"], ["n11"]),  # [N,1,1]
        helper.make_node("Mul", ["n11", "obj_column"], ["objectness"]),  # [N,2,7]
        helper.make_node("Add", ["objectness", "head"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_stub",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", *HEAD.shape])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape3"),
            numpy_helper.from_array(objectness_column, "obj_column"),
            numpy_helper.from_array(HEAD[None], "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def frame_batch(bright: list[bool], gop: int = 0, camera: str = "yolo") -> FrameBatch:
    """30 fps frames (pts step 512 in 1/15360 s, as MP4 muxes them): white or black."""
    n = len(bright)
    pixels = np.zeros((n, SIZE, SIZE, 3), dtype=np.uint8)
    pixels[np.asarray(bright)] = 255
    first = gop * n
    return FrameBatch(
        camera=camera,
        gop=gop,
        part=0,
        parts=1,
        video_seq=gop + 1,
        frame_indices=tuple(range(first, first + n)),
        pts=tuple(512 * i for i in range(first, first + n)),
        source_size=(SOURCE, SOURCE),
        scale=SIZE / SOURCE,
        pad=(0, 0),
        shape=(n, SIZE, SIZE, 3),
        pixels=pixels.tobytes(),
        gop_frames=n,
        time_base=(1, 15360),
    )


async def run_stage(settings: Settings, batches: list[FrameBatch]) -> list[DetectionsMessage]:
    """Publish ``batches`` to FRAMES, run the real stage in this process until every
    DETECTIONS message is back, then drain it."""
    await setup_topology(settings)
    nc = await bus.connect(settings, "test-inference")
    js = nc.jetstream(timeout=10.0)
    got: list[DetectionsMessage] = []
    done = asyncio.Event()

    async def on_detections(msg: Any) -> None:
        got.append(messages.decode(msg.headers, msg.data, DetectionsMessage))
        if len(got) == len(batches):
            done.set()

    sub = await nc.subscribe(Names.wildcard(Names.DETECTIONS), cb=on_detections)
    for batch in batches:
        headers, body = messages.encode(batch)
        msg_id = Names.msg_id(batch.camera, batch.gop, "test", batch.part)
        await bus.publish(js, Names.subject(Names.FRAMES, batch.camera), body, headers, msg_id)
    runner = Runner(Inference(settings), settings)
    task = asyncio.create_task(runner.run(serve_health=False))
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        runner.request_stop()
        await task
        await sub.unsubscribe()
        await nc.close()
    return sorted(got, key=lambda m: m.gop)


def yolo_settings(settings: Settings, model: Path, **extra: Any) -> Settings:
    return settings.replace(
        inference={
            "model": "yolo",
            "model_file": str(model),
            "yolo_input_size": SIZE,
            "classes": "0",
            "class_names": "person,car",
            "score_threshold": 0.5,
            "nms_iou": 0.45,
            **extra,
        }
    )


def test_yolo_from_config_publishes_the_parsers_detections(settings: Settings, tmp_path: Path) -> None:
    """model = "yolo" in config: the stage builds the YOLO plug-in and DETECTIONS carries
    its boxes (in source pixels), labels from class_names, the class filter applied."""
    model = yolo_graph(tmp_path / "yolo.onnx")
    bright = [i % 3 != 2 for i in range(9)]
    (out,) = asyncio.run(run_stage(yolo_settings(settings, model), [frame_batch(bright)]))
    assert out.model == "yolo:yolo.onnx"
    assert [f.frame for f in out.frames] == list(range(9))
    for frame, lit in zip(out.frames, bright, strict=True):
        if not lit:
            assert frame.detections == ()
            continue
        (det,) = frame.detections
        assert det.label == "person"
        assert det.box == pytest.approx((12.0, 8.0, 20.0, 24.0))
        assert det.score == pytest.approx(0.95, abs=1e-4)


@pytest.mark.parametrize("carry", [True, False])
def test_detect_fps_runs_the_model_on_every_sixth_frame(
    settings: Settings, tmp_path: Path, carry: bool
) -> None:
    """30 fps at detect_fps = 5: the model sees frames 0, 6, 12...; frames between carry
    the last detections (carry) or none. The frames in between are the opposite of the
    frame before them (0 and 12 lit, 6 black, 7-11 lit), so any extra model run shows."""
    model = yolo_graph(tmp_path / "yolo.onnx")
    bright = [i in (0, 12) or 7 <= i <= 11 for i in range(18)]
    cfg = yolo_settings(settings, model, detect_fps=5.0, skipped_frames="carry" if carry else "none")
    (out,) = asyncio.run(run_stage(cfg, [frame_batch(bright)]))
    with_boxes = [f.frame for f in out.frames if f.detections]
    if carry:
        assert with_boxes == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]
    else:
        assert with_boxes == [0, 12]


def test_frames_the_decoder_skipped_get_carried_detections(settings: Settings, tmp_path: Path) -> None:
    """A batch as the decoder sends it at detect_fps = 5 holds the pixels of frames 0, 6, 12
    only (`selected`); DETECTIONS still has all 18 frames, the skipped ones carrying."""
    import dataclasses

    model = yolo_graph(tmp_path / "yolo.onnx")
    full = frame_batch([i in (0, 12) for i in range(18)])
    selected = tuple(i % 6 == 0 for i in range(18))
    pixels = np.frombuffer(full.pixels, dtype=np.uint8).reshape(full.shape)[np.asarray(selected)]
    sparse = dataclasses.replace(full, shape=(3, SIZE, SIZE, 3), pixels=pixels.tobytes(), selected=selected)
    (out,) = asyncio.run(run_stage(yolo_settings(settings, model), [sparse]))
    assert [f.frame for f in out.frames] == list(range(18))
    assert [f.frame for f in out.frames if f.detections] == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]


def test_unknown_family_and_missing_model_fail_in_one_line(settings: Settings, tmp_path: Path) -> None:
    """Config errors name the setting and what to do, on one line."""
    with pytest.raises(ConfigError, match=r"inference\.model must be") as unknown:
        settings.replace(inference={"model": "ssd"})
    with pytest.raises(ConfigError, match=r"needs inference\.model_file") as no_file:
        settings.replace(inference={"model": "yolo"})
    missing = yolo_settings(settings, tmp_path / "nope.onnx")
    with pytest.raises(ConfigError, match=r"nope\.onnx does not exist") as absent:
        build_detector(missing.inference)
    wrong_size = yolo_settings(settings, yolo_graph(tmp_path / "y.onnx"), yolo_input_size=640)
    with pytest.raises(ConfigError, match=r"takes 16x16 images .*inference\.yolo_input_size") as size:
        build_detector(wrong_size.inference)
    for error in (unknown, no_file, absent, size):
        assert "\n" not in str(error.value)


def test_backend_is_reported_in_metrics_and_status(settings: Settings, tmp_path: Path) -> None:
    """After setup the stage's /metrics carries framepipe_inference_backend_info with
    backend, device, precision and model; `framepipe status` scrapes it from the local
    inference process and shows it."""
    model = yolo_graph(tmp_path / "yolo.onnx")
    cfg = yolo_settings(settings, model)
    asyncio.run(run_stage(cfg, [frame_batch([True])]))
    server = health.Health()
    port = server.serve(0, host="127.0.0.1")
    try:
        # What the supervisor records for a stage process: its log names the metrics port.
        log = tmp_path / "inference-0.log"
        log.write_text(json.dumps({"event": "stage.health", "port": port}) + "\n")
        runtime = Runtime(cfg.nats.url, processes=(ProcessEntry("inference-0", os.getpid(), str(log)),))
        report = asyncio.run(collect_status(cfg, runtime))
    finally:
        server.close()
    expected = {
        "process": "inference-0",
        "backend": "onnxruntime",
        "device": "cpu",
        "precision": "fp32",
        "model": "yolo:yolo.onnx",
    }
    assert expected in report["inference"]
    console = Console(record=True, width=160)
    for table in render_status(report):
        console.print(table)
    text = console.export_text()
    assert "Inference backends" in text
    assert "yolo:yolo.onnx" in text


def test_one_gop_done_per_gop_with_an_int_gop(settings: Settings, tmp_path: Path) -> None:
    """A GOP in two FRAMES parts: one gop.done for the GOP, whose gop is an int (it logged
    gop.done per part, gop a string, before); the first part's part.done is a debug event,
    seen here only when no earlier test configured logging at info."""
    import dataclasses

    from structlog.testing import capture_logs

    settings = yolo_settings(settings, yolo_graph(tmp_path / "yolo.onnx"))
    first = dataclasses.replace(frame_batch([True, False]), parts=2, gop_frames=4)
    second = dataclasses.replace(
        frame_batch([False, True]), part=1, parts=2, gop_frames=4, frame_indices=(2, 3), pts=(1024, 1536)
    )
    with capture_logs() as logs:
        asyncio.run(run_stage(settings, [first, second]))
    done = [e for e in logs if e["event"] in ("gop.done", "part.done")]
    assert [e["event"] for e in done if e["event"] == "gop.done"] == ["gop.done"]
    assert [e["event"] for e in done].count("part.done") <= 1
    assert all(e["gop"] == 0 for e in done)


def test_picture_batches_find_the_faces_letterboxed_ones_do(settings: Settings) -> None:
    """The real BlazeFace on a real 16:9 clip: a batch of pictures with no bars (the decoder's
    default) and the same frames letterboxed by the decoder give the same detections."""
    import dataclasses

    from framepipe.media.gop import GopCutter
    from framepipe.stages.decoder import Decoder, frame_batches
    from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
    from tests.helpers import faces_clip

    container, stream = open_input(str(faces_clip()))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        gop = gop_message("faces", next(iter(cutter.cut(iter_packets(container, stream)))), params)
    settings = settings.replace(inference={"detect_fps": 5.0})
    batches = []
    for camera, layout in (("pictures", "picture"), ("squares", "letterbox")):
        chosen = settings.replace(decoder={"frames_layout": layout})
        frames, pts, selected, letterbox = Decoder(chosen)._decode(gop)
        batches += frame_batches(
            dataclasses.replace(gop, camera=camera), 1, frames, pts, letterbox, chosen, selected
        )
    size = settings.inference.input_size
    assert {b.picture for b in batches} == {(0, 0), (size * 9 // 16, size)}
    by_camera = {m.camera: m for m in asyncio.run(run_stage(settings, batches))}
    pictures, squares = by_camera["pictures"].frames, by_camera["squares"].frames
    assert [f.frame for f in pictures] == [f.frame for f in squares] == list(range(len(gop.packets)))
    found = [d for f in pictures for d in f.detections]
    assert found, "the clip's face was not found at all"
    for a, b in zip(pictures, squares, strict=True):
        assert len(a.detections) == len(b.detections)
        for da, db in zip(a.detections, b.detections, strict=True):
            assert da.box == pytest.approx(db.box, abs=1e-3)
            assert da.score == pytest.approx(db.score, abs=1e-5)
