"""Security of the local setup against a real nats-server: auth, per-stage permissions, TLS, web token."""

from __future__ import annotations

import asyncio
import json
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest

from framepipe.core import bus
from framepipe.core.auth import ADMIN, AUTH_FILE
from framepipe.core.errors import BusError, ConfigError
from framepipe.core.settings import Settings
from framepipe.core.topology import USERS, Names
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import STAGES, LocalSystem
from framepipe.web.server import WebServer, is_loopback, resolve_token
from tests.helpers import clip

Secure = tuple[NatsServer, Settings]


def _start(tmp_path: Path, **local: object) -> Secure:
    base = Settings().replace(local={"state_dir": str(tmp_path / "state"), **local})
    server = NatsServer.local(base, tmp_path / "state").start(log_file=tmp_path / "nats-server.log")
    return server, server.client_settings(base)


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Secure]:
    """The local system's nats-server (auth on, as `framepipe run` starts it), topology created."""
    server, admin = _start(tmp_path)
    try:

        async def topology() -> None:
            nc = await bus.connect(admin, "test-setup", retry_initial=False)
            await bus.ensure_topology(nc.jetstream(timeout=10.0), admin)
            await nc.close()

        asyncio.run(topology())
        yield server, admin
    finally:
        server.stop()


def _as(secure: Secure, user: str) -> Settings:
    server, admin = secure
    assert server.passwords is not None
    return admin.replace(nats={"user": user, "password": server.passwords[user]})


def _stranger(secure: Secure, tmp_path: Path, **nats: str) -> Settings:
    """Settings for the server's URL but another state dir: no local admin fallback."""
    return Settings().replace(
        nats={"url": secure[0].url, **nats}, local={"state_dir": str(tmp_path / "other")}
    )


def _connect_error(settings: Settings) -> str:
    async def go() -> None:
        nc = await bus.connect(settings, "test-refused", retry_initial=False)
        await nc.close()

    with pytest.raises(BusError) as caught:
        asyncio.run(go())
    return str(caught.value)


@pytest.mark.integration  # starts its own nats-server
def test_passwords_are_generated_once_and_kept_private(secure: Secure, tmp_path: Path) -> None:
    """One strong password per user in a 0600 file, reused at the next start; the server config is 0600."""
    server, _ = secure
    state = tmp_path / "state"
    for path in (state / AUTH_FILE, state / "nats-server.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    saved = json.loads((state / AUTH_FILE).read_text())
    assert saved["url"] == server.url
    assert set(saved["passwords"]) == set(USERS)
    assert len(set(saved["passwords"].values())) == len(USERS)
    assert all(len(p) >= 32 for p in saved["passwords"].values())
    again = NatsServer.local(Settings().replace(local={"state_dir": str(state)}), state)
    assert again.passwords == saved["passwords"]
    assert saved["passwords"][ADMIN] not in repr(secure[1])


@pytest.mark.integration  # starts its own nats-server
def test_anonymous_and_wrong_password_are_refused_in_one_line(secure: Secure, tmp_path: Path) -> None:
    """No credentials, or a wrong password: one line that says which settings to set,
    without any password in it."""
    server, _ = secure
    assert server.passwords is not None
    anonymous = _connect_error(_stranger(secure, tmp_path))
    assert "anonymous" in anonymous
    assert "authorization violation" in anonymous
    assert "FRAMEPIPE_NATS__USER" in anonymous
    assert "\n" not in anonymous
    wrong = _connect_error(_stranger(secure, tmp_path, user=Names.DECODER, password="not-the-password"))
    assert "user 'decoder'" in wrong
    assert "FRAMEPIPE_NATS__PASSWORD" in wrong
    assert "\n" not in wrong
    for secret in [*server.passwords.values(), "not-the-password"]:
        assert secret not in anonymous
        assert secret not in wrong


@pytest.mark.integration  # starts its own nats-server
def test_local_tools_connect_as_admin_only_to_their_own_server(secure: Secure, tmp_path: Path) -> None:
    """With just the URL and the state dir (what `framepipe status`/`cameras`/`dlq` have), a
    client connects as the local admin; after the server stops the credentials are no
    longer offered to that URL."""
    server, admin = secure
    local_tool = Settings().replace(nats={"url": server.url}, local={"state_dir": admin.local.state_dir})

    async def streams() -> list[str]:
        nc = await bus.connect(local_tool, "test-tool", retry_initial=False)
        try:
            return sorted(s.config.name or "" for s in await nc.jetstream(timeout=5.0).streams_info())
        finally:
            await nc.close()

    assert Names.VIDEO in asyncio.run(streams())
    server.stop()
    assert json.loads((Path(admin.local.state_dir) / AUTH_FILE).read_text())["url"] == ""


@pytest.mark.integration  # starts its own nats-server
def test_each_stage_does_its_own_job_and_nothing_else(secure: Secure) -> None:
    """The decoder consumes VIDEO through its durable, publishes FRAMES and acks; it can
    neither publish to video.*/out.* nor consume dets.* or another stage's consumer."""
    subject = Names.subject(Names.VIDEO, "cam1")

    async def scenario() -> None:
        gateway = await bus.connect(_as(secure, "gateway"), "test-gateway", retry_initial=False)
        decoder = await bus.connect(_as(secure, Names.DECODER), "test-decoder", retry_initial=False)
        admin = await bus.connect(secure[1], "test-admin", retry_initial=False)
        try:
            await bus.publish(gateway.jetstream(), subject, b"gop", {}, "cam1:0:gateway")
            await bus.publish(admin.jetstream(), Names.subject(Names.DETECTIONS, "cam1"), b"d", {}, "d0")
            js = decoder.jetstream(timeout=1.0)
            sub = await js.pull_subscribe_bind(durable=Names.DECODER, stream=Names.VIDEO)
            (msg,) = await sub.fetch(1, timeout=5.0)
            await bus.publish(js, Names.subject(Names.FRAMES, "cam1"), b"frames", {}, "cam1:0:decoder:0")
            await msg.ack_sync(timeout=5.0)

            denied = (nats.errors.TimeoutError, nats.errors.NoRespondersError)
            for forbidden in (subject, Names.subject(Names.OUTPUT, "cam1")):
                with pytest.raises(denied):
                    await js.publish(forbidden, b"forged", timeout=1.0)
            with pytest.raises(denied):  # creating a consumer on DETECTIONS
                await js.pull_subscribe(Names.wildcard(Names.DETECTIONS), stream=Names.DETECTIONS)
            stolen = await js.pull_subscribe_bind(durable=Names.INFERENCE, stream=Names.FRAMES)
            with pytest.raises(denied):
                await stolen.fetch(1, timeout=1.0)

            ajs = admin.jetstream(timeout=5.0)
            assert (await ajs.stream_info(Names.VIDEO)).state.messages == 1  # no forged GOP
            assert (await ajs.stream_info(Names.OUTPUT)).state.messages == 0
            inference = await ajs.consumer_info(Names.FRAMES, Names.INFERENCE)
            assert inference.num_pending == 1
            assert inference.num_ack_pending == 0
        finally:
            for client in (gateway, decoder, admin):
                await client.close()

    asyncio.run(scenario())


@pytest.mark.integration  # starts its own nats-server
def test_tls_works_with_the_ca_and_fails_without_it(tmp_path: Path) -> None:
    """local.nats_tls: a self-signed CA and server certificate (keys 0600); clients that
    verify against the CA connect, a client without it gets one line naming the setting."""
    server, admin = _start(tmp_path, nats_tls=True)
    try:
        assert server.url.startswith("tls://")
        assert server.tls is not None
        assert stat.S_IMODE(server.tls.key.stat().st_mode) == 0o600
        assert not (server.tls.ca.parent / "ca-key.pem").exists()

        async def account() -> int:
            nc = await bus.connect(admin, "test-tls", retry_initial=False)
            try:
                return (await nc.jetstream(timeout=5.0).account_info()).streams
            finally:
                await nc.close()

        assert asyncio.run(account()) == 0
        assert server.passwords is not None
        no_ca = _stranger((server, admin), tmp_path, user=ADMIN, password=server.passwords[ADMIN])
        message = _connect_error(no_ca)
        assert "TLS" in message
        assert "FRAMEPIPE_NATS__TLS_CA" in message
        assert "\n" not in message
        missing = no_ca.replace(nats={"tls_ca": str(tmp_path / "nope.pem")})
        assert "does not exist" in _connect_error(missing)
    finally:
        server.stop()


def test_nats_credentials_settings_are_validated() -> None:
    """A user without a password, credentials twice, or half a client certificate: one line."""
    for nats_section in (
        {"user": "decoder"},
        {"password": "x"},
        {"url": "nats://a:b@127.0.0.1:4222", "user": "a", "password": "b"},
        {"tls_cert": "c.pem"},
    ):
        with pytest.raises(ConfigError):
            Settings().replace(nats=nats_section)


@pytest.mark.integration  # a LocalSystem with its own nats-server
def test_local_system_runs_each_process_as_its_own_user_and_logs_no_secret(
    tmp_path: Path, models_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`framepipe run`'s system with auth on: every stage connects as its own user, a
    camera completes, the console reads OUTPUT as admin, and no password is in any log."""
    state = tmp_path / "state"
    settings = Settings().replace(
        sink={"output_dir": str(tmp_path / "out")},
        inference={"models_dir": str(models_dir)},
        local={"state_dir": str(state), "autoscale": False, "shutdown_grace_s": 15.0},
    )
    with LocalSystem(settings, state) as system:
        system.start()
        system.wait_ready()
        assert system.server is not None
        assert system.server.passwords is not None
        passwords = dict(system.server.passwords)
        with urllib.request.urlopen(f"{system.server.monitor_url}/connz?auth=true", timeout=5) as r:
            users = {c.get("name"): c.get("authorized_user") for c in json.load(r)["connections"]}
        for stage in STAGES:
            assert users[f"framepipe-{stage}"] == stage, users
        console = system.start_web()
        gateway = system.add_camera("sec", str(clip("h264_bframes.mp4")), "fast")
        result = system.wait_for_camera("sec", gateway, stall_timeout=90)
        assert result.complete, result.reason
        with urllib.request.urlopen(console + "api/cameras", timeout=5) as r:
            assert [c["camera"] for c in json.load(r)] == ["sec"]
    logs = [p.read_text(errors="replace") for p in (state / "logs").glob("*.log")]
    logs.append((state / "logs" / "nats-server.log").read_text())
    captured = capfd.readouterr()
    logs += [captured.out, captured.err]
    assert len(logs) > len(STAGES)
    for user, password in passwords.items():
        assert not any(password in text for text in logs), f"{user}'s password is in a log"


def test_web_token_when_exposed(nats_settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    """Bound beyond loopback (here forced with require_token=always) every path but /healthz
    needs the token: 401 without or with a wrong one; ?token= sets a cookie that then
    suffices; Bearer works; playlists opened with ?token= carry it to their segments."""
    settings = nats_settings
    assert resolve_token(settings.web, "127.0.0.1") is None
    assert resolve_token(settings.web, "::1") is None
    exposed = resolve_token(settings.web, "0.0.0.0")
    assert exposed
    assert len(exposed) >= 24
    assert exposed != resolve_token(settings.web, "192.168.1.20")
    assert is_loopback("localhost")
    assert not is_loopback("camera-host.example")

    async def topology() -> None:
        nc = await bus.connect(settings, "test-setup", retry_initial=False)
        await bus.ensure_topology(nc.jetstream(timeout=10.0), settings)
        await nc.close()

    asyncio.run(topology())
    token = "t0ken-for-the-test-1234"
    server = WebServer(settings.replace(web={"require_token": "always", "token": token}), port=0).start()
    try:
        from framepipe.web.index import Segment

        server.index.add_segment("hall", Segment(0, 1, 2.0, False, 60, 0, 0.0, 0.0))

        def get(path: str, **headers: str) -> tuple[int, bytes, str]:
            request = urllib.request.Request(server.url + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    return r.status, r.read(), r.headers.get("Set-Cookie", "")
            except urllib.error.HTTPError as err:
                return err.code, err.read(), ""

        assert get("healthz")[0] == 200
        for path in ("", "api/cameras", "hall/index.m3u8", "hall/seg_000000.ts"):
            status, body, _ = get(path)
            assert status == 401
            assert b"token" in body
        assert get("api/cameras?token=wrong-token-of-same-size")[0] == 401
        status, _, cookie = get(f"?token={token}")
        assert status == 200
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert get("api/cameras", Cookie=cookie.split(";")[0])[0] == 200
        assert get("api/cameras", Authorization=f"Bearer {token}")[0] == 200
        status, playlist, _ = get(f"hall/index.m3u8?token={token}")
        assert status == 200
        assert f"seg_000000.ts?token={token}" in playlist.decode()
        assert server.open_url == f"{server.url}?token={token}"
    finally:
        server.stop()
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err  # the server itself never logs it
