"""Prometheus metrics, health/readiness endpoints and the live status view."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from framepipe.core import health
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.status import (
    Watch,
    histogram_quantile,
    metrics_port_from_log,
    sample_value,
    scrape,
)
from framepipe.local.supervisor import STAGES, LocalSystem
from framepipe.media.sample import ClipSpec, make_clip
from tests.helpers import MEDIA

CLIP = ClipSpec(width=480, height=270, seconds=3.0, gop=15, bframes=2)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_histogram_quantile() -> None:
    """Quantiles interpolate linearly inside the bucket they fall in; no observations give None."""
    # 10 observations: 5 ≤ 0.1 s, 4 in (0.1, 0.5], 1 in (0.5, 1].
    buckets = {0.1: 5.0, 0.5: 9.0, 1.0: 10.0, float("inf"): 10.0}
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.95) == pytest.approx(0.75)
    assert histogram_quantile({}, 0.95) is None
    assert histogram_quantile({0.1: 0.0, float("inf"): 0.0}, 0.95) is None


def test_readiness_needs_every_check() -> None:
    """/healthz answers at once; /readyz is 503 until started and every check passes (naming a failed one)."""
    h = health.Health()
    connected = [False]
    h.add_check("nats", lambda: connected[0])
    port = h.serve(0, host="127.0.0.1")
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        h.ready = True
        status, text = _get(f"http://127.0.0.1:{port}/readyz")
        assert (status, "nats: no" in text) == (503, True)
        connected[0] = True
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "started: ok\nnats: ok\n")
        assert "framepipe_gops_total" in _get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        h.close()


@pytest.mark.integration
def test_metrics_move_during_a_run_and_match_the_gops(settings: Settings) -> None:
    """Scrape every stage's /metrics while a camera streams: the counters rise while it
    runs and end equal to the GOPs (and frames) of the clip; probes answer; the
    `status --watch` view shows replicas and lag."""
    source = MEDIA / "metrics.mp4"
    if not source.is_file():
        make_clip(source, CLIP)
    gops = CLIP.frames // CLIP.gop
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start()
        system.wait_ready()
        ports: dict[str, int] = {}
        for managed in system.processes:
            port = metrics_port_from_log(managed.log_file)
            assert port is not None, f"{managed.name} logged no metrics port"
            ports[managed.name.rsplit("-", 1)[0]] = port
        assert set(ports) == set(STAGES)
        for stage, port in ports.items():
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, stage
            assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "started: ok\nnats: ok\n"), stage

        def gops_done(stage: str) -> float:
            samples = scrape(f"http://127.0.0.1:{ports[stage]}/metrics")
            return sample_value(samples, "framepipe_gops_total", stage=stage)

        gateway = system.add_camera("meter", str(source), "realtime")
        seen: list[float] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not seen or seen[-1] < gops):
            seen.append(gops_done(Names.ENCODER))
            time.sleep(0.2)
        assert system.wait_for_camera("meter", gateway, stall_timeout=60).complete
        assert seen == sorted(seen), "a counter went down"
        assert any(0 < v < gops for v in seen), f"no intermediate value seen: {seen}"

        metrics = {stage: scrape(f"http://127.0.0.1:{port}/metrics") for stage, port in ports.items()}
        for stage in STAGES:
            m = metrics[stage]
            assert sample_value(m, "framepipe_gops_total", stage=stage) == gops, stage
            assert sample_value(m, "framepipe_in_flight", stage=stage) == 0, stage
            assert sample_value(m, "framepipe_dead_letters_total", stage=stage) == 0, stage
            assert sample_value(m, "framepipe_batch_size_count", stage=stage, kind="fetch") >= 1, stage
        decoder, encoder = metrics[Names.DECODER], metrics[Names.ENCODER]
        assert sample_value(decoder, "framepipe_messages_total", stage="decoder", outcome="ok") == gops
        assert sample_value(decoder, "framepipe_process_seconds_count", stage="decoder") == gops
        assert sample_value(decoder, "framepipe_frames_total", stage="decoder") == CLIP.frames
        assert sample_value(encoder, "framepipe_frames_total", stage="encoder") == CLIP.frames
        assert sample_value(encoder, "framepipe_backend_info", stage="encoder") == 1

        watch = Watch(settings, Path(settings.local.state_dir) / "runtime.json")
        watch.poll()
        view = Console(record=True, width=160)
        view.print(watch.poll())
        text = view.export_text()
        assert "meter" in text
        row = next(line for line in text.splitlines() if line.strip("│ ").startswith("encoder "))
        assert row.split("│")[2].strip() == "1", row  # replicas
        assert "ms" in row  # p95 latency from the histogram
