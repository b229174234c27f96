"""Fixtures, and the markers every test gets from what it uses.

The server chain, each a fresh one per test::

    nats_server ─▶ nats_settings ─▶ nc ─▶ js
                        └──────▶ settings (+ the built models)

``nats_server`` is a real nats-server with JetStream on free loopback ports;
``nats_settings`` points every section at it and at a per-test state/output dir;
``settings`` adds the models built by ``make models``; ``nc`` is a client
connected the way a stage connects (closed after the test); ``js`` is its
JetStream context with the whole topology created. ``nc`` and ``js`` are async:
use them from ``async def`` tests (pytest-asyncio, ``asyncio_mode = "auto"``).

Markers (registered in pyproject.toml), added in ``pytest_collection_modifyitems``:

* ``integration``: the test uses one of ``SERVER_FIXTURES`` (as defined here: a
  module that defines its own fixture under one of those names is not judged by
  it), or carries ``@pytest.mark.integration`` itself because it starts a
  nats-server, ``LocalSystem`` or ``python -m framepipe`` on its own.
* ``slow``: listed in ``SLOW`` (measured with ``--durations=0`` on 2 cores: over ~10 s).
  A name in ``SLOW`` that its module no longer defines is a usage error, not a silent no-op.

``pytest -m "not integration"`` is the fast inner loop; ``make test`` runs everything.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from framepipe.core import bus, logs
from framepipe.core.settings import Settings
from framepipe.local.natscluster import NatsNodes
from framepipe.local.natsserver import NatsServer
from tests.helpers import FACE_MODEL, MODELS

# In-process CLI runs configure logging again and again: no logger may keep the processors of
# an earlier configuration, or capture_logs misses its events (see logs.CACHE_LOGGERS).
logs.CACHE_LOGGERS = False

#: fixtures that start a nats-server (directly or through the one they depend on).
SERVER_FIXTURES = frozenset({"nats_server", "nats_settings", "settings", "nc", "js"})

#: tests over ~10 s with ``--durations=0`` on 2 cores (quiet machine; each measured 10-21 s in two
#: runs), as ``path::function`` (all its parametrizations). The next ones take 6-9 s.
SLOW = frozenset(
    {
        "tests/local/test_autoscale_local.py::test_burst_scales_every_stage_up_and_back_down_losing_nothing",
        "tests/local/test_faults.py::test_kill_9_of_every_stage_mid_run_loses_and_duplicates_nothing",
        "tests/local/test_faces_pipeline.py::test_recognition_off_tracks_boxes_without_names_or_unknown_alerts",
        "tests/local/test_faces_pipeline.py::test_enrolled_person_identified_other_unknown_one_track_across_every_gop",
        "tests/local/test_faces_pipeline.py::test_kill_9_of_analysis_mid_run_loses_and_duplicates_no_event",
        "tests/local/test_faults.py::test_nats_server_restart_mid_run_resumes",
        "tests/local/test_contract_live.py::TestLiveContract::test_prometheus_clients_and_schemas_on_a_live_run",
        "tests/stages/test_rtsp.py::test_rtsp_cameras_flow_through_the_pipeline_and_survive_a_server_restart",
        # issue 15: a visible and a paired thermal camera through every stage (~37 s)
        "tests/local/test_fever_pipeline.py::test_one_fever_alert_for_the_hot_person_none_for_the_other",
        "tests/web/test_web.py::test_console_plays_annotated_video_in_headless_chromium",
        "tests/web/test_whep.py::test_aiortc_viewer_receives_every_frame_of_a_live_camera_in_order",
        "tests/web/test_instant.py::TestInstantView::test_frames_before_the_first_gop_is_complete_in_order_with_timed_boxes",
        "tests/web/test_instant.py::test_console_plays_instant_view_with_boxes_in_headless_chromium",
        "tests/stages/test_on_demand.py::test_on_demand_burns_in_only_while_watched_and_the_encoder_sleeps_at_zero",
        "tests/web/test_whep_on_demand.py::test_a_whep_viewer_of_an_on_demand_camera_gets_the_burn_in_live_rendition",
        "tests/web/test_console_live.py::test_console_tile_lists_warns_toggles_burn_in_and_falls_back_to_hls_in_headless_chromium",
        "tests/stages/test_event_clips.py::test_alert_of_an_on_demand_camera_becomes_a_burnt_in_clip_of_the_gops_around_it",
        # a real `framepipe run` each (issue 21; 20-60 s on the loaded machine)
        "tests/local/test_lifecycle.py::test_sigterm_and_sighup_stop_the_run_in_order",
        "tests/local/test_lifecycle.py::test_sigkill_of_the_run_takes_its_children_along",
        # issue 18: NATS faults (a single server's crash, a 3-node cluster's faults)
        "tests/local/test_nats_crash.py::test_kill_9_of_the_embedded_nats_server_mid_run_completes_every_frame_once",
        "tests/local/test_nats_crash.py::test_a_3_node_cluster_run_survives_a_kill_9_of_the_video_leader",
        "tests/local/test_cluster_pipeline.py::test_kill_9_of_the_frames_then_the_encode_leader_mid_run",
        "tests/stages/test_disk_full.py::TestDiskFullLiveCamera::test_a_live_camera_drops_counts_and_resumes_when_old_messages_age_out",
        "tests/core/test_cluster_faults.py::TestClusterFaults::test_kill_9_of_the_video_leader_and_its_restart",
        "tests/core/test_cluster_faults.py::TestClusterFaults::test_a_hung_node_past_the_election_timeout_then_resumed",
        "tests/core/test_cluster_faults.py::TestClusterFaults::test_two_nodes_down_waits_in_one_line_and_carries_on_with_quorum",
        "tests/core/test_cluster_faults.py::TestClusterFaults::test_rolling_restart_of_all_three_nodes",
        # issue 15: the mask attribute end to end (16 s)
        "tests/local/test_mask_pipeline.py::test_masked_face_is_reported_worn_where_switched_on_and_absent_where_off",
        # issue 21c: real `framepipe run` processes (three runs; two systems stopped under a web server)
        "tests/local/test_recording_resume.py::TestRecordingSurvivesRestart::test_second_run_appends_after_a_discontinuity_and_fresh_starts_clean",
        "tests/local/test_declared_run.py::TestRunDeclaredCameras::test_run_once_processes_every_declared_camera_with_its_mode",
        "tests/web/test_system_gone.py::test_web_says_once_that_the_system_is_gone_and_exits",
        # issue 21d: a real `framepipe run --once` each (retention; export after the run)
        "tests/stages/test_retention.py::TestRetentionInARun::test_a_run_with_a_size_limit_prunes_and_the_playlist_plays",
        "tests/web/test_export_disk.py::TestExportAfterARun::test_export_after_run_once_has_every_frame_of_the_clip",
    }
)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The ONNX models built by `make models` (never downloaded by tests)."""
    if not FACE_MODEL.is_file():
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
def nats_cluster(tmp_path: Path) -> Iterator[NatsNodes]:
    """Three nats-servers routed on free loopback ports, one store directory each (no auth)."""
    base = Settings().replace(local={"state_dir": str(tmp_path / "state"), "nats_auth": False})
    nodes = NatsNodes.local(base, tmp_path / "state", count=3)
    nodes.start(timeout=90.0)  # generous: CI machines may be loaded
    try:
        yield nodes
    finally:
        for index in range(3):  # a test may leave a node stopped (SIGSTOP)
            nodes.signal(index, signal.SIGCONT)
        nodes.stop()


@pytest.fixture
def nats_settings(nats_server: NatsServer, tmp_path: Path) -> Settings:
    """Settings pointing at the fixture server and a per-test state and output dir (no models)."""
    return Settings().replace(
        nats={"url": nats_server.url},
        sink={"output_dir": str(tmp_path / "output")},
        local={"state_dir": str(tmp_path / "state"), "shutdown_grace_s": 15.0},
        decoder={"ack_wait_s": 20.0, "retry_backoff_s": 0.2, "max_deliver": 3},
        encoder={"ack_wait_s": 20.0, "retry_backoff_s": 0.2, "max_deliver": 3},
    )


@pytest.fixture
def settings(models_dir: Path, nats_settings: Settings) -> Settings:
    """``nats_settings`` plus the models dir, for tests that run inference."""
    return nats_settings.replace(inference={"models_dir": str(models_dir)})


@pytest.fixture
async def nc(nats_settings: Settings) -> AsyncIterator[Client]:
    """A client of the fixture server, connected as a stage connects; closed after the test."""
    client = await bus.connect(nats_settings, "test", retry_initial=False)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def js(nc: Client, nats_settings: Settings) -> JetStreamContext:
    """``nc``'s JetStream context, with every stream, consumer and KV bucket created."""
    context = nc.jetstream(timeout=10.0)
    await bus.ensure_topology(context, nats_settings)
    return context


@pytest.fixture(autouse=True)
def _child_logs_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage processes log JSON lines (tests parse them); no FRAMEPIPE_SECTION__FIELD leaks in."""
    monkeypatch.setenv("FRAMEPIPE_LOG_FORMAT", "json")
    for key in list(os.environ):
        if key.startswith("FRAMEPIPE_") and "__" in key:
            monkeypatch.delenv(key)


@pytest.fixture
def fresh_bus_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bus module's logger, cached on first use under an earlier ``logs.configure``, can
    keep a processor list that ``capture_logs`` no longer sees (seen in a full suite run):
    give the module a fresh one (``pytestmark = pytest.mark.usefixtures("fresh_bus_logger")``)."""
    monkeypatch.setattr(bus, "log", structlog.get_logger("framepipe.bus"))


def _uses_server_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses one of this file's ``SERVER_FIXTURES`` (not a module's namesake)."""
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return False
    for name in SERVER_FIXTURES.intersection(fixture_info.names_closure):
        definitions = fixture_info.name2fixturedefs.get(name, ())
        if definitions and definitions[-1].func.__module__ == __name__:
            return True
    return False


def _defines(module: object, name: str) -> bool:
    """Whether ``module`` has ``name`` (``function`` or ``Class::method``)."""
    found: object = module
    for part in name.split("::"):
        found = getattr(found, part, None)
        if found is None:
            return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``integration`` and ``slow`` tests (see the module docstring)."""
    listed: dict[str, pytest.Item] = {}
    for item in items:
        if item.get_closest_marker("integration") is None and _uses_server_fixture(item):
            item.add_marker(pytest.mark.integration)
        function = item.nodeid.split("[", 1)[0]
        if function in SLOW:
            item.add_marker(pytest.mark.slow)
        listed.setdefault(function.split("::", 1)[0], item)
    # A renamed test must not drop out of SLOW silently: each listed name must exist in
    # its module whenever that module is collected.
    for entry in SLOW:
        path, _, name = entry.partition("::")
        item = listed.get(path)
        module = getattr(item, "module", None)
        if module is not None and not _defines(module, name):
            raise pytest.UsageError(f"tests/conftest.py SLOW names {entry}, which does not exist")
