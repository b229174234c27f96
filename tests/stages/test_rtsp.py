"""RTSP input: a real GStreamer RTSP server on loopback, killed and restarted mid-stream.

The tests skip with a reason when the Debian GStreamer packages are missing (see
tests/rtsp.py); the unit tests of the pieces (timestamps, parameter sets, backoff,
credentials) are tests/stages/test_rtsp_input.py and run everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from framepipe.core import bus, messages
from framepipe.core.bus import setup_topology
from framepipe.core.messages import Headers
from framepipe.core.recording import read_progress
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.media.sample import ClipSpec
from tests.helpers import MODELS
from tests.rtsp import RtspServer, looped_clip, require_gst

CLIP = dict(width=320, height=240, seconds=2.0, gop=15, bframes=2)
REPEAT = 30  # 60 s per client session: longer than any test needs


@pytest.fixture(scope="module")
def rtsp_media() -> dict[str, Path]:
    require_gst()
    return {
        "h264": looped_clip("rtsp_h264.mp4", ClipSpec(**CLIP), REPEAT),  # type: ignore[arg-type]
        "hevc": looped_clip("rtsp_hevc.mp4", ClipSpec(**CLIP, codec="libx265"), REPEAT),  # type: ignore[arg-type]
    }


@pytest.fixture
def rtsp_server(rtsp_media: dict[str, Path], tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(rtsp_media, tmp_path / "rtsp-server.log", user="viewer:s3cret-pw").start()
    try:
        yield server
    finally:
        server.stop()


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        "FRAMEPIPE_LOCAL__SHUTDOWN_GRACE_S": "15",
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        "FRAMEPIPE_GATEWAY__RECONNECT_INITIAL_S": "0.2",
        "FRAMEPIPE_GATEWAY__RECONNECT_MAX_S": "2",
        "FRAMEPIPE_GATEWAY__READ_TIMEOUT_S": "3",
        "FRAMEPIPE_GATEWAY__CONNECT_TIMEOUT_S": "3",
    }


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framepipe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _entries(out: Path, camera: str) -> list[dict[str, object]]:
    try:
        progress = read_progress(out / camera / ".state")
    except (FileNotFoundError, ValueError):
        return []
    entries: list[dict[str, object]] = progress["entries"]
    return entries


def _wait(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"framepipe run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def _gap_events(nats_url: str, camera: str, state_dir: Path) -> list[messages.GapMessage]:
    async def go() -> list[messages.GapMessage]:
        # The state dir holds the local server's admin credentials (auth is on by default).
        settings = Settings().replace(nats={"url": nats_url}, local={"state_dir": str(state_dir)})
        nc = await bus.connect(settings, "test-gaps", retry_initial=False)
        try:
            js = nc.jetstream()
            info = await js.stream_info(Names.DETECTIONS)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(Names.DETECTIONS, seq)
                headers = raw.headers or {}
                if headers.get(Headers.KIND) == "gap" and headers.get(Headers.CAMERA) == camera:
                    found.append(messages.decode(headers, raw.data or b"", messages.GapMessage))
            return found
        finally:
            await nc.close()

    return asyncio.run(go())


@pytest.mark.integration
def test_rtsp_cameras_flow_through_the_pipeline_and_survive_a_server_restart(
    rtsp_server: RtspServer, tmp_path: Path
) -> None:
    """`framepipe run --source rtsp://…` (H.264) plus a camera added while it runs with
    `framepipe cameras add` (HEVC): segments flow; the RTSP server is killed and
    restarted; both gateways reconnect, the next segment carries #EXT-X-DISCONTINUITY,
    a gap event is on dets.<camera> and one `gateway.gap` log line is written; then
    `cameras remove` stops the HEVC gateway while the rest keeps running."""
    env = _env(tmp_path)
    env["FRAMEPIPE_SOURCE_USERNAME"], env["FRAMEPIPE_SOURCE_PASSWORD"] = "viewer", "s3cret-pw"
    out = tmp_path / "out"
    logs = tmp_path / "state" / "logs"
    run = subprocess.Popen(
        [sys.executable, "-m", "framepipe", "run", "--source", rtsp_server.url("h264"), "--camera", "door",
         "--output", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run.err", "wb"),  # noqa: SIM115
    )  # fmt: skip
    try:
        _wait("door segments", lambda: len(_entries(out, "door")) >= 3, 90, run)
        added = _cli(["cameras", "add", "hall", rtsp_server.url("hevc")], env)
        assert added.returncode == 0, added.stderr
        listed = _cli(["cameras", "list"], env)
        rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()[1:]}
        assert rows["hall"][1] == rtsp_server.url("hevc")
        assert rows["door"][4] == "run --source"  # the run's own camera is listed too
        _wait("hall segments", lambda: len(_entries(out, "hall")) >= 3, 60, run)

        rtsp_server.kill()
        time.sleep(1.5)
        rtsp_server.start()

        def resumed(camera: str) -> Callable[[], bool]:
            def check() -> bool:
                entries = _entries(out, camera)
                marks = [i for i, e in enumerate(entries) if e["discontinuity"]]
                return bool(marks) and len(entries) - marks[0] >= 2

            return check

        _wait("door after the restart", resumed("door"), 60, run)
        _wait("hall after the restart", resumed("hall"), 60, run)

        nats_url = json.loads((tmp_path / "state" / "runtime.json").read_text())["nats_url"]
        for camera in ("door", "hall"):
            gaps = _gap_events(nats_url, camera, tmp_path / "state")
            assert len(gaps) == 1
            assert gaps[0].down_s >= 1.0
            entries = _entries(out, camera)
            first_after = next(e for e in entries if e["discontinuity"])
            assert first_after["gop"] == gaps[0].gop
            log_lines = (logs / f"gateway-{camera}.log").read_text().splitlines()
            assert sum('"gateway.gap"' in line for line in log_lines) == 1
            assert not any("s3cret" in line for line in log_lines)

        removed = _cli(["cameras", "remove", "hall"], env)
        assert removed.returncode == 0, removed.stderr

        def hall_gone() -> bool:
            runtime = json.loads((tmp_path / "state" / "runtime.json").read_text())
            return all(p["name"] != "gateway-hall" for p in runtime["processes"])

        _wait("the hall gateway to stop", hall_gone, 30, run)
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
    assert run.returncode == 0, (tmp_path / "run.err").read_text()[-2000:]

    for camera, codec in (("door", "h264"), ("hall", "hevc")):
        playlist = (out / camera / "index.m3u8").read_text()
        assert "#EXT-X-DISCONTINUITY" in playlist
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        with av.open(str(out / camera / segments[-1])) as segment:
            assert sum(1 for _ in segment.decode(video=0)) > 0
        lines = [json.loads(x) for x in (out / camera / "detections.jsonl").read_text().splitlines()]
        assert len(lines) >= 4 * CLIP["gop"]
        with_face = sum(1 for line in lines if line["detections"])
        assert with_face >= 0.8 * len(lines), f"{camera} ({codec}): a face on {with_face}/{len(lines)} frames"


@pytest.mark.integration
def test_wrong_url_or_credentials_log_one_line_and_keep_retrying(
    rtsp_server: RtspServer, nats_settings: Settings, tmp_path: Path
) -> None:
    """A wrong password (401) and a wrong path (404) give one-line errors without
    the credentials, the gateways keep retrying with backoff instead of exiting, and
    stop cleanly on SIGTERM; the right credentials (from the environment or the URL)
    connect over TCP and over UDP."""
    settings = nats_settings
    asyncio.run(setup_topology(settings))
    env = {**_env(tmp_path), **settings.to_env(), "FRAMEPIPE_LOG_FORMAT": "json"}
    cases = {
        "badpw": (rtsp_server.url("h264", "viewer:wrong-pw"), {}),
        "badpath": (rtsp_server.url("nope"), {"FRAMEPIPE_SOURCE_USERNAME": "viewer",
                                             "FRAMEPIPE_SOURCE_PASSWORD": "s3cret-pw"}),
        "good": (rtsp_server.url("h264"), {"FRAMEPIPE_SOURCE_USERNAME": "viewer",
                                          "FRAMEPIPE_SOURCE_PASSWORD": "s3cret-pw"}),
        "goodudp": (rtsp_server.url("hevc", "viewer:s3cret-pw"),
                    {"FRAMEPIPE_GATEWAY__RTSP_TRANSPORT": "udp"}),
    }  # fmt: skip
    procs = {}
    for camera, (url, extra) in cases.items():
        procs[camera] = subprocess.Popen(
            [sys.executable, "-m", "framepipe", "gateway", "--camera", camera, "--source", url],
            env={**env, **extra}, stdout=open(tmp_path / f"{camera}.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )  # fmt: skip
    try:
        # At least 6 s of retries for the bad ones; on a loaded machine also wait (bounded)
        # until both good cameras have published a GOP.
        started = time.monotonic()
        while time.monotonic() - started < 6 or (
            time.monotonic() - started < 40
            and not all('"gop.done"' in (tmp_path / f"{c}.log").read_text() for c in ("good", "goodudp"))
        ):
            time.sleep(0.5)
        for camera, proc in procs.items():
            assert proc.poll() is None, f"{camera} gateway exited: {(tmp_path / f'{camera}.log').read_text()}"
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {camera: proc.wait(20) for camera, proc in procs.items()}
    assert codes == {"badpw": 0, "badpath": 0, "good": 0, "goodudp": 0}

    def events(camera: str) -> list[dict[str, object]]:
        text = (tmp_path / f"{camera}.log").read_text()
        assert "s3cret" not in text
        assert "wrong-pw" not in text
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    for camera, status in (("badpw", "401"), ("badpath", "404")):
        errors = [e for e in events(camera) if e["event"] == "gateway.source_error"]
        assert 2 <= len(errors) <= 12, errors  # retried with backoff, not in a busy loop
        assert all(status in str(e["error"]) and "\n" not in str(e["error"]) for e in errors), errors
        assert [e["attempt"] for e in errors] == list(range(1, len(errors) + 1))
    for camera in ("good", "goodudp"):  # credentials from the environment / the URL; TCP / UDP
        good = events(camera)
        assert any(e["event"] == "gateway.opened" for e in good)
        assert any(e["event"] == "gop.done" for e in good)
        assert not any(e["event"] == "gateway.source_error" for e in good)


@pytest.mark.integration
def test_a_stalled_server_hits_the_read_timeout_and_the_gateway_reconnects(
    rtsp_server: RtspServer, nats_settings: Settings, tmp_path: Path
) -> None:
    """The server stops answering (SIGSTOP: no RST, no EOF): the read timeout closes the
    input, reconnect attempts time out too, and once the server runs again the gateway
    continues with the gap recorded."""
    settings = nats_settings
    asyncio.run(setup_topology(settings))
    env = {**_env(tmp_path), **settings.to_env(), "FRAMEPIPE_LOG_FORMAT": "json"}
    env["FRAMEPIPE_GATEWAY__READ_TIMEOUT_S"] = env["FRAMEPIPE_GATEWAY__CONNECT_TIMEOUT_S"] = "1.5"
    log_file = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "framepipe", "gateway", "--camera", "stall", "--source",
         rtsp_server.url("h264", "viewer:s3cret-pw")],
        env=env, stdout=open(log_file, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip

    def events() -> list[dict[str, object]]:
        lines = log_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for(event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["event"] == event for e in events()):
            assert proc.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, f"no {event}: {log_file.read_text()[-2000:]}"
            time.sleep(0.2)

    assert rtsp_server.process is not None
    try:
        wait_for("gop.done", 20)
        rtsp_server.process.send_signal(signal.SIGSTOP)
        wait_for("gateway.source_error", 10)
        time.sleep(2)
        rtsp_server.process.send_signal(signal.SIGCONT)
        wait_for("gateway.gap", 20)
        assert proc.poll() is None
    finally:
        if rtsp_server.process is not None:
            rtsp_server.process.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    errors = [str(e["error"]) for e in events() if e["event"] == "gateway.source_error"]
    assert "timed out (no data for 1.5s)" in errors[0]
    gap = next(e for e in events() if e["event"] == "gateway.gap")
    assert float(gap["down_s"]) >= 1.5  # type: ignore[arg-type]
    gops = [int(e["gop"]) for e in events() if e["event"] == "gop.done"]  # type: ignore[call-overload]
    assert gops == list(range(len(gops)))
    discontinuous = [int(e["gop"]) for e in events() if e["event"] == "gop.done" and e["discontinuity"]]  # type: ignore[call-overload]
    assert discontinuous == [gap["gop"]]
