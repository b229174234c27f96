"""Dead letters: what a stage writes, and `framepipe dlq list|show|replay|purge` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framepipe.cli.app import app
from framepipe.core import bus, logs, topology
from framepipe.core.dlq import dead_letter
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.topology import Names


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog on CliRunner's temporary stderr; point it back."""
    yield
    logs.configure()


ORIGINAL = {Headers.VERSION: "1", Headers.KIND: "gop", Headers.CAMERA: "cam1", Headers.GOP: "7"}


async def _dead_letter_one(settings: Settings, body: bytes) -> None:
    """Publish one VIDEO message, fetch it as the decoder would, and dead-letter it."""
    nc = await bus.connect(settings, "test-dlq", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, settings)
        await bus.publish(js, "video.cam1", body, ORIGINAL, "cam1:7:gateway")
        spec = topology.consumer_spec("decoder")
        sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        (msg,) = await sub.fetch(1, timeout=5.0)
        await dead_letter(js, "decoder", msg, "corrupt-media", "InvalidDataError:\n  bad  bitstream")
        await msg.term()
    finally:
        await nc.close()


async def _video_messages(settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    nc = await bus.connect(settings, "test-dlq", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        info = await js.stream_info(Names.VIDEO)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(Names.VIDEO, seq)
            out.append((dict(raw.headers or {}), raw.data or b""))
        return out
    finally:
        await nc.close()


def test_dlq_cli_list_show_replay_purge(nats_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead letter is listed (one-line error), shown, replayed to its original subject
    with its original headers (and removed), and purged."""
    # Sync on purpose: each `framepipe dlq` command runs its own event loop (asyncio.run).
    settings = nats_settings
    monkeypatch.setenv("FRAMEPIPE_NATS__URL", settings.nats.url)
    body = bytes(range(256)) * 3
    asyncio.run(_dead_letter_one(settings, body))
    cli = CliRunner()

    listed = cli.invoke(app, ["dlq", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert row["stage"] == "decoder"
    assert row["reason"] == "corrupt-media"
    assert row["camera"] == "cam1"
    assert row["gop"] == "7"
    assert row["original_subject"] == "video.cam1"
    assert row["bytes"] == len(body)
    assert row["error"] == "InvalidDataError: bad bitstream"  # one line, whitespace collapsed

    assert cli.invoke(app, ["dlq", "list", "--stage", "encoder", "--json"]).stdout.strip() == ""
    shown = cli.invoke(app, ["dlq", "show", str(row["seq"])])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["headers"][Headers.DELIVERIES] == "1"
    assert cli.invoke(app, ["dlq", "show", "9999"]).exit_code == 1

    replayed = cli.invoke(app, ["dlq", "replay", str(row["seq"])])
    assert replayed.exit_code == 0, replayed.output
    videos = asyncio.run(_video_messages(settings))
    assert len(videos) == 2  # the original and the replay
    headers, data = videos[-1]
    assert data == body
    for key, value in ORIGINAL.items():
        assert headers[key] == value
    assert Headers.ERROR not in headers
    assert Headers.ORIGINAL_SUBJECT not in headers
    # replay removed the dead letter
    assert cli.invoke(app, ["dlq", "list", "--json"]).stdout.strip() == ""

    asyncio.run(_dead_letter_one(settings, b"garbage"))
    purged = cli.invoke(app, ["dlq", "purge", "--stage", "decoder", "--yes"])
    assert purged.exit_code == 0, purged.output
    assert "purged 1" in purged.output
    assert cli.invoke(app, ["dlq", "list", "--json"]).stdout.strip() == ""


@pytest.mark.integration
def test_bad_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    """`python -m framepipe dlq list` with an invalid setting exits 2 with one line naming the field."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEPIPE_")}
    env["FRAMEPIPE_DECODER__MAX_DELIVER"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "framepipe", "dlq", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "max_deliver" in lines[0]
