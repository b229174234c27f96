"""The contract against a live local run: a real Prometheus scrapes it with the shipped rules,
a Node client (@nats-io/jetstream) and framepipe.client read DETECTIONS and validate it,
the sink's detections.jsonl matches its schema, and the web server serves the AsyncAPI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from nats.js import JetStreamContext

from framepipe.client import Received, connect
from framepipe.cluster import monitoring
from framepipe.core import asyncapi, bus, messages, schemas
from framepipe.core.errors import ConfigError
from framepipe.core.messages import DetectionsMessage
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.status import metrics_port_from_log
from framepipe.local.supervisor import LocalSystem
from framepipe.web.server import WebServer
from tests.helpers import NODE_MODULES, NODE_PROGRAMS, REPO, faces_clip, read_jsonl

CAMERA = "contract"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Prometheus:
    """A real Prometheus (Debian package) on a random loopback port scraping ``targets``."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus not found (Debian package `prometheus`)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shutil.copy(monitoring.RULES, workdir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {
                    "job_name": "framepipe",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {monitoring.STAGE_LABEL: stage}}
                        for stage, port in targets.items()
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.args = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The first non-empty answer to ``expr``."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


@pytest.fixture
def live_run(settings: Settings, tmp_path: Path) -> Iterator[tuple[LocalSystem, dict[str, int]]]:
    """A local run (fixture nats-server, every stage) and each stage's metrics port."""
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start()
        system.wait_ready()
        ports = {}
        for managed in system.processes:
            port = metrics_port_from_log(managed.log_file)
            assert port is not None, f"{managed.name} logged no metrics port"
            ports[managed.name.rsplit("-", 1)[0]] = port
        yield system, ports


async def _read_detections(settings: Settings, since: object = None) -> list[Received]:
    async with connect(settings.nats.url) as client:
        return [item async for item in client.detections(CAMERA, since=since, follow=False)]  # type: ignore[arg-type]


def _node(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@nats-io" / "jetstream").is_dir():
        pytest.skip("node or the contract npm packages missing: run `make contract-tools`")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    return subprocess.run(
        [node, str(NODE_PROGRAMS / program), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


class TestLiveContract:
    """One short run, read by every consumer of the contract."""

    def test_prometheus_clients_and_schemas_on_a_live_run(
        self, live_run: tuple[LocalSystem, dict[str, int]], settings: Settings, tmp_path: Path
    ) -> None:
        """Prometheus answers the rules' queries; Node and Python clients read every DETECTIONS
        message of the run and each validates; detections.jsonl and /asyncapi.json match."""
        system, ports = live_run
        started = time.time()
        with Prometheus(tmp_path, ports) as prometheus:
            gateway = system.add_camera(CAMERA, str(faces_clip()), "fast")
            assert system.wait_for_camera(CAMERA, gateway, stall_timeout=90).complete

            # --- Prometheus: raw series, the rules' recordings, every dashboard query.
            frames = prometheus.wait_for('framepipe_frames_total{stage="decoder"} > 0')
            assert frames, "prometheus scraped no decoder frames"
            assert frames[0]["metric"][monitoring.STAGE_LABEL] == Names.DECODER
            ended = prometheus.wait_for(f'framepipe_camera_state{{camera="{CAMERA}", state="ended"}} == 1')
            assert ended, "the sink exported no camera state"
            ages = prometheus.wait_for("framepipe:backlog_age_seconds:max")
            assert {a["metric"]["consumer"] for a in ages} >= {"decoder", "inference", "encoder", "sink"}
            replicas = prometheus.wait_for('framepipe:stage_replicas:count{stage="decoder"}')
            assert float(replicas[0]["value"][1]) == 1.0
            assert prometheus.query('up{framepipe_stage="sink"} == 1')
            groups = _get_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
            loaded = [rule for group in groups for rule in group["rules"]]
            written = yaml.safe_load(monitoring.RULES.read_text())["groups"]
            assert len(loaded) == sum(len(group["rules"]) for group in written) > 0
            assert all(rule["health"] == "ok" for rule in loaded), loaded
            dashboard = json.loads(monitoring.DASHBOARD.read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    prometheus.query(target["expr"].replace("$stage", ".*").replace("$camera", ".*"))

        # --- the Node client (independent of Python) validates every message.
        node = _node("product-client.cjs", settings.nats.url, str(REPO / "docs" / "schemas"))
        assert node.returncode == 0, node.stdout + node.stderr
        results = {r["stream"]: r for r in json.loads(node.stdout.strip().splitlines()[-1])["results"]}
        detections = results[Names.DETECTIONS]
        assert detections["invalid"] == []
        assert detections["messages"] > 0
        assert results[Names.EVENTS].get("invalid", []) == [], results[Names.EVENTS]

        # --- framepipe.client: the same messages, and only the later ones from a given time.
        everything = asyncio.run(_read_detections(settings))
        assert len(everything) == detections["messages"]
        assert all(isinstance(item.message, DetectionsMessage) for item in everything)
        assert all(item.time.timestamp() >= started - 1 for item in everything)
        for start in (everything[0], everything[len(everything) // 2], everything[-1]):
            later = asyncio.run(_read_detections(settings, since=start.time))
            assert [i.stream_seq for i in later] == [i.stream_seq for i in everything if i.time >= start.time]
            assert start.stream_seq in {i.stream_seq for i in later}  # its own time includes it
        assert asyncio.run(_read_detections(settings, since=time.time() + 60)) == []

        # --- the sink's detections.jsonl lines follow their schema.
        lines = read_jsonl(Path(settings.sink.output_dir) / CAMERA / "detections.jsonl")
        validator = jsonschema.Draft202012Validator(schemas.detections_line_schema())
        assert lines
        assert all(validator.is_valid(line) for line in lines)
        events_file = Path(settings.sink.output_dir) / CAMERA / "events.jsonl"
        event_validator = jsonschema.Draft202012Validator(schemas.stream_schema(Names.EVENTS))
        assert (
            all(event_validator.is_valid(line) for line in read_jsonl(events_file))
            if events_file.exists()
            else True
        )

        # --- the web server serves the checked-in AsyncAPI document.
        server = WebServer(settings, port=0).start()
        try:
            with urllib.request.urlopen(server.url + "asyncapi.json", timeout=5) as response:
                assert response.read() == (REPO / "docs" / "asyncapi.json").read_bytes()
            assert asyncapi.document()["info"]["title"] == "framepipe"
        finally:
            server.stop()


class TestNodeClientRejects:
    """The Node client's validation can fail: a malformed message is reported, not passed."""

    async def test_malformed_detection_fails_the_node_client(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """One good and one bad DETECTIONS message (a 3-number box): exit 1, the bad one named."""
        good = DetectionsMessage(CAMERA, 0, 0, 1, (), "test")
        headers, body = messages.encode(good)
        await bus.publish(js, Names.subject(Names.DETECTIONS, CAMERA), body, headers, "good")
        bad = json.loads(body)
        bad["frames"] = [
            {"frame": 0, "pts": 0, "detections": [{"box": [1, 2, 3], "score": 0.5, "label": "face"}]}
        ]
        await bus.publish(
            js, Names.subject(Names.DETECTIONS, CAMERA), json.dumps(bad).encode(), headers, "bad"
        )
        result = await asyncio.to_thread(
            _node, "product-client.cjs", nats_settings.nats.url, str(REPO / "docs" / "schemas")
        )
        assert result.returncode == 1, result.stdout + result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])["results"][0]
        assert summary["messages"] == 2
        assert [bad["seq"] for bad in summary["invalid"]] == [2]
        assert "box" in json.dumps(summary["invalid"])


class TestClient:
    """framepipe.client follows a camera live and refuses what is not a product stream."""

    async def test_follow_yields_messages_published_later(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """With follow=True a detection published after the read began arrives; other cameras do not."""
        async with connect(nats_settings.nats.url) as client:
            reader = client.detections(CAMERA, since=time.time())
            first = asyncio.ensure_future(reader.__anext__())
            await asyncio.sleep(0.5)
            for camera, msg_id in (("other", "o1"), (CAMERA, "c1")):
                headers, body = messages.encode(DetectionsMessage(camera, 4, 0, 1, (), "test"))
                await bus.publish(js, Names.subject(Names.DETECTIONS, camera), body, headers, msg_id)
            item = await asyncio.wait_for(first, 10)
            await reader.aclose()
        assert isinstance(item.message, DetectionsMessage)
        assert (item.message.camera, item.message.gop, item.subject) == (CAMERA, 4, "dets.contract")

    async def test_internal_streams_are_refused(self, nats_settings: Settings) -> None:
        """Reading VIDEO (an internal stream) is a ConfigError."""
        async with connect(nats_settings.nats.url) as client:
            with pytest.raises(ConfigError, match="not a product stream"):
                await client.read(Names.VIDEO, CAMERA).__anext__()
