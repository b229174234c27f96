"""``<state_dir>/runtime.json``: what a running ``framepipe run`` is, for the other tools.

The supervisor writes it whenever its processes change and removes it when it
stops; ``framepipe status``, ``cameras``, ``dlq``, ``web`` and ``export`` read
it to find the local NATS and the live stage processes. This module is its only
reader and writer: a missing or unreadable file is "nothing is running".
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepipe.core.settings import Settings
from framepipe.core.topology import consumer_stages, process_kind

RUNTIME_FILE = "runtime.json"


def runtime_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / RUNTIME_FILE


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ProcessEntry:
    """One supervised process: ``decoder-0``, ``gateway-lobby``, ``web``."""

    name: str
    pid: int | None
    log: str

    @property
    def kind(self) -> str:
        """The stage (or ``gateway``/``web``) the process belongs to."""
        return process_kind(self.name)

    @property
    def is_stage(self) -> bool:
        return self.kind in {spec.name for spec in consumer_stages()}

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "log": self.log}


@dataclass(frozen=True)
class Runtime:
    nats_url: str
    monitor_url: str | None = None
    output_dir: str = ""
    supervisor_pid: int | None = None
    processes: tuple[ProcessEntry, ...] = field(default_factory=tuple)

    def live_stage_processes(self) -> list[ProcessEntry]:
        return [p for p in self.processes if p.is_stage and p.alive]

    def replicas(self) -> dict[str, int]:
        """Live local processes per stage."""
        counts: dict[str, int] = {}
        for proc in self.live_stage_processes():
            counts[proc.kind] = counts.get(proc.kind, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "nats_url": self.nats_url,
            "monitor_url": self.monitor_url,
            "output_dir": self.output_dir,
            "supervisor_pid": self.supervisor_pid,
            "processes": [p.to_json() for p in self.processes],
        }

    @classmethod
    def from_json(cls, data: Any) -> Runtime | None:
        if not isinstance(data, dict) or not isinstance(data.get("nats_url"), str):
            return None
        processes = []
        for proc in data.get("processes") or []:
            if isinstance(proc, dict):
                pid = proc.get("pid")
                name, log = str(proc.get("name", "")), str(proc.get("log", ""))
                processes.append(ProcessEntry(name, pid if isinstance(pid, int) else None, log))
        monitor = data.get("monitor_url")
        supervisor = data.get("supervisor_pid")
        return cls(
            data["nats_url"],
            monitor if isinstance(monitor, str) else None,
            str(data.get("output_dir", "")),
            supervisor if isinstance(supervisor, int) else None,
            tuple(processes),
        )


def read_runtime(path: Path) -> Runtime | None:
    """The runtime file at ``path``; None when it is missing or unreadable."""
    try:
        return Runtime.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def write_runtime(path: Path, runtime: Runtime) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(runtime.to_json(), indent=2))
    os.replace(partial, path)


def remove_runtime(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def attach_to_running(settings: Settings) -> tuple[Settings, Runtime | None]:
    """Point ``settings`` at the NATS of a running ``framepipe run`` (its runtime file in
    ``local.state_dir``), if there is one; also return that runtime."""
    runtime = read_runtime(runtime_path(settings.local.state_dir))
    if runtime is None:
        return settings, None
    return settings.replace(nats={"url": runtime.nats_url}), runtime
