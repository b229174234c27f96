"""Local runtime: embedded nats-server, topology, stage and gateway processes.

The supervisor is what a cluster would be on one machine: it starts NATS,
creates the streams (same code as the Kubernetes setup Job), runs each stage as
its own OS process, restarts a process that crashed, and shuts down in order:
sources first, then stages drain (SIGTERM), then NATS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog

from framepipe.core import bus, gallery, topology
from framepipe.core.auth import user_for_process
from framepipe.core.cluster_settings import StageScaling
from framepipe.core.errors import SetupError
from framepipe.core.logs import RUN_ID_ENV
from framepipe.core.settings import Settings
from framepipe.core.topology import consumer_stages, process_kind, validate_camera_name
from framepipe.local.autoscaling import build_autoscaler
from framepipe.local.camera_sync import stop_camera, sync_cameras
from framepipe.local.cameras import CameraSpec, CameraWatch
from framepipe.local.natscluster import CLUSTER_DIR, NatsNodes
from framepipe.local.natsserver import free_port
from framepipe.local.processes import Managed
from framepipe.local.progress import CameraResult, ProgressWatch, read_progress
from framepipe.local.resume import ResumePoint, seed_source_state
from framepipe.local.runtime import ProcessEntry, Runtime, remove_runtime, runtime_path, write_runtime
from framepipe.local.statelock import StateLock
from framepipe.scaling.autoscale import Autoscaler

log = structlog.get_logger("framepipe.supervisor")
#: the stages that run as replicas of a consumer, from the topology table.
STAGES = tuple(spec.name for spec in consumer_stages())


async def _waiting_pulls(settings: Settings) -> dict[str, int]:
    nc = await bus.connect(settings, "framepipe-supervisor", retry_initial=False)
    try:
        js = nc.jetstream(timeout=5.0)
        waiting: dict[str, int] = {}
        for stage in STAGES:
            spec = topology.stage_spec(stage).consumer
            info = await js.consumer_info(spec.stream, spec.durable)
            waiting[stage] = info.num_waiting or 0
        return waiting
    finally:
        await nc.close()


#: ONNX Runtime threads per inference session when the setting is 0 (auto). Auto gives a
#: session the cores divided by the inference replicas, as in a pod that owns its CPUs; here
#: every stage shares this machine's cores, and a second thread spends more CPU on handing
#: work over than it saves. Measured on 2 cores, 16 cameras of 720p30 at detect_fps 5, paired
#: (bench.density_cpu): inference 0.031 -> 0.027 CPU s per camera-second, latency p50 0.27 -> 0.21 s.
LOCAL_ORT_THREADS = 1


class LocalSystem:
    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        *,
        embedded_nats: bool = True,
        monitor_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.embedded = embedded_nats
        self.server: NatsNodes | None = None
        self.processes: list[Managed] = []
        self.stopping = False
        self.monitor_url = monitor_url
        self.autoscaler: Autoscaler | None = None
        self.drained: list[tuple[str, int | None]] = []  # (process, exit code) after scale-down
        #: cameras of the FP_CAMERAS bucket: its watch (from watch_cameras()) and their gateways.
        self.camera_watch: CameraWatch | None = None
        self.kv_cameras: dict[str, tuple[CameraSpec, Managed]] = {}
        #: cameras whose kept recording the gateway goes on from (:mod:`.resume`).
        self.resumed: dict[str, ResumePoint] = {}
        self.state_lock = StateLock(state_dir)
        #: on every log line of this system and its children (core.logs.add_run_id).
        self.run_id = uuid.uuid4().hex[:12]
        os.environ[RUN_ID_ENV] = self.run_id  # this process's lines; child_env copies it

    # -- lifecycle -------------------------------------------------------
    def claim_state_dir(self) -> None:
        """One system per state folder: SetupError naming the running one (:mod:`.statelock`)."""
        self.state_lock.acquire()

    def start(self, replicas: dict[str, int] | None = None, *, fresh: bool = True) -> None:
        self.claim_state_dir()
        if fresh and self.embedded:
            shutil.rmtree(self.state_dir / "jetstream", ignore_errors=True)
            shutil.rmtree(self.state_dir / CLUSTER_DIR, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded:
            # Auth (one user per process kind) and TLS as [local] says; we connect as admin.
            # One server or a 3-node cluster (local.nats_cluster); restarted in supervise().
            self.server = NatsNodes.local(self.settings, self.state_dir).start()
            self.settings = self.server.client_settings(self.settings)
            self.monitor_url = self.server.monitor_url
        asyncio.run(bus.setup_topology(self.settings))
        # The face gallery of this machine (framepipe faces) into the fresh FP_FACES bucket.
        asyncio.run(gallery.seed_from_files(self.settings))
        counts = {stage: self.settings.consumer(stage).replicas for stage in STAGES}
        counts.update(replicas or {})
        for stage in STAGES:
            for _ in range(counts[stage]):
                self._add_replica(stage)
        self._write_runtime()
        log.info("system.started", nats=self.settings.nats.url, processes=len(self.processes))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every stage replica is pulling (the consumer's ``num_waiting``)."""
        wanted: dict[str, int] = {}
        for managed in self.processes:
            stage = process_kind(managed.name)
            if stage in STAGES:
                wanted[stage] = wanted.get(stage, 0) + 1
        deadline = time.monotonic() + timeout
        while True:
            waiting = asyncio.run(_waiting_pulls(self.settings))
            if all(waiting.get(stage, 0) >= count for stage, count in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise SetupError(
                    f"stages not ready after {timeout:.0f}s (pulling: {waiting}, wanted: {wanted}); "
                    f"see the logs in {self.state_dir / 'logs'}"
                )
            self.supervise()
            time.sleep(0.2)

    def add_camera(
        self,
        camera: str,
        source: str,
        pacing: str | None = None,
        *,
        once: bool = False,
        thermal_of: str | None = None,
    ) -> Managed:
        validate_camera_name(camera)
        argv = [sys.executable, "-m", "framepipe", "gateway", "--camera", camera, "--source", source]
        if pacing:
            argv += ["--pacing", pacing]
        if thermal_of:  # a thermal camera: its GOPs go to the THERMAL stream
            argv += ["--thermal-of", thermal_of]
        if once:  # a live source that fails ends the gateway (and `run --once`) instead of retrying
            argv += ["--once"]
        if (point := seed_source_state(self.settings, camera)) is not None:
            self.resumed[camera] = point
            log.info("camera.resumed", camera=camera, next_gop=point.next_gop, segments_kept=point.segments)
        managed = self._add(f"gateway-{camera}", argv, restart=False)
        self._write_runtime()
        return managed

    def start_web(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> str:
        """Run the HLS server + console (``framepipe web``) as a supervised process; return its URL."""
        import urllib.request

        port = port or free_port(host)
        argv = [sys.executable, "-m", "framepipe", "web", "--host", host, "--port", str(port)]
        argv += ["--runtime-file", str(runtime_path(self.state_dir))]
        managed = self._add("web", argv)
        self._write_runtime()
        url = f"http://{host}:{port}/"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                if not managed.alive and managed.process is not None:
                    code = managed.process.returncode
                    raise SetupError(f"the web server exited ({code}); see {managed.log_file}") from None
                if time.monotonic() > deadline:
                    raise SetupError(f"the web server did not answer on {url} in {timeout:.0f}s") from None
            time.sleep(0.2)

    def _add(self, name: str, argv: list[str], restart: bool = True) -> Managed:
        managed = Managed(name, argv, self.state_dir / "logs" / f"{name}.log", restart)
        managed.spawn(self.child_env(name))
        self.processes.append(managed)
        return managed

    def child_env(self, name: str = "") -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.to_env())
        passwords = self.server.passwords if self.server is not None else None
        if passwords:  # each process connects as its own kind's user (per-stage permissions)
            user = user_for_process(name)
            env["FRAMEPIPE_NATS__USER"], env["FRAMEPIPE_NATS__PASSWORD"] = user, passwords[user]
        env.setdefault("FRAMEPIPE_LOG_FORMAT", "json")
        if name.startswith("inference") and self.settings.inference.intra_op_threads == 0:
            env["FRAMEPIPE_INFERENCE__INTRA_OP_THREADS"] = str(LOCAL_ORT_THREADS)
        return env

    def supervise(self) -> None:
        """Restart stage processes that died (a crash must not stall the pipeline),
        reap replicas that finished draining, and let the autoscaler act."""
        self._reap_drained()
        if self.server is not None and not self.stopping:
            self.server.restart_crashed()  # a crashed nats-server comes back on its ports and store
        if self.autoscaler is not None and not self.stopping:
            self.autoscaler.step()
        for managed in self.processes:
            if self.stopping or managed.alive or not managed.restart or managed.process is None:
                continue
            code = managed.process.returncode
            managed.restarts += 1
            log.warning("process.restarted", process=managed.name, exit_code=code, restarts=managed.restarts)
            managed.spawn(self.child_env(managed.name))

    # -- replicas and autoscaling -----------------------------------------
    def _add_replica(self, stage: str) -> Managed:
        used = {m.name for m in self.processes}
        index = next(i for i in range(len(used) + 1) if f"{stage}-{i}" not in used)
        return self._add(f"{stage}-{index}", [sys.executable, "-m", "framepipe", "stage", stage])

    def replicas(self, stage: str) -> list[Managed]:
        """The stage's processes that count as replicas (started, not draining)."""
        return [m for m in self.processes if process_kind(m.name) == stage and not m.draining]

    def scale(self, stage: str, count: int) -> None:
        """Start replicas, or drain the newest ones (SIGTERM: finish, ack, exit)."""
        current = self.replicas(stage)
        for _ in range(count - len(current)):
            self._add_replica(stage)
        surplus = sorted(current, key=lambda m: int(m.name.rsplit("-", 1)[1]))[count:] if count >= 0 else []
        for managed in surplus:
            managed.restart, managed.draining = False, True
            if managed.alive and managed.process is not None:
                managed.process.send_signal(signal.SIGTERM)
        self._write_runtime()

    def _reap_drained(self) -> None:
        for managed in [m for m in self.processes if m.draining and not m.alive]:
            code = managed.process.returncode if managed.process else None
            self.processes.remove(managed)
            self.drained.append((managed.name, code))
            if code not in (0, None):
                log.warning("process.drain_failed", process=managed.name, exit_code=code)
            else:
                log.info("process.drained", process=managed.name)
            self._write_runtime()

    def enable_autoscaling(self, scaling: StageScaling | None = None) -> Autoscaler:
        """Scale decoder/inference/encoder like KEDA would, from the consumers' lag.

        ``scaling`` defaults to the ``[scaling.*]`` tables of ``FRAMEPIPE_CONFIG``
        (what ``framepipe k8s render`` puts in the ScaledObjects); on one machine
        ``local.max_replicas`` caps each stage further.
        """
        self.autoscaler = build_autoscaler(self, scaling)
        return self.autoscaler

    def stop(self) -> None:
        """Sources first, then drain the stages, then NATS. Kill what overstays."""
        self.stopping = True
        grace = self.settings.local.shutdown_grace_s
        gateways = [m for m in self.processes if m.name.startswith("gateway-")]
        stages = [m for m in self.processes if not m.name.startswith("gateway-")]
        for group in (gateways, stages):
            for managed in group:
                if managed.alive and managed.process:
                    managed.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for managed in group:
                if managed.process is None:
                    continue
                try:
                    managed.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("process.killed", process=managed.name, why="did not drain in time")
                    managed.process.kill()
                    managed.process.wait()
        if self.server:
            self.server.stop()
        if self.state_lock.held:
            remove_runtime(runtime_path(self.state_dir))
        self.state_lock.release()

    def __enter__(self) -> LocalSystem:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write_runtime(self) -> None:
        runtime = Runtime(
            nats_url=self.settings.nats.url,
            monitor_url=self.server.monitor_url if self.server else None,
            output_dir=str(Path(self.settings.sink.output_dir).resolve()),
            supervisor_pid=os.getpid(),
            processes=tuple(
                ProcessEntry(m.name, m.process.pid if m.process else None, str(m.log_file))
                for m in self.processes
            ),
        )
        write_runtime(runtime_path(self.state_dir), runtime)

    # -- cameras from the FP_CAMERAS bucket (`framepipe cameras add/remove`) ----
    def watch_cameras(self) -> None:
        """Follow the desired cameras; call :meth:`sync_cameras` from the supervising loop."""
        self.camera_watch = CameraWatch(self.settings).start()

    def sync_cameras(self) -> None:
        """Spawn a gateway for each added camera, stop the removed ones (no restart)."""
        sync_cameras(self)

    def _stop_camera(self, name: str) -> None:
        stop_camera(self, name)

    # -- waiting -----------------------------------------------------------
    def camera_progress(self, camera: str) -> dict[str, object] | None:
        return read_progress(Path(self.settings.sink.output_dir), camera)

    def wait_for_camera(
        self,
        camera: str,
        gateway: Managed,
        *,
        stall_timeout: float = 180.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> CameraResult:
        """Block until the sink has closed the camera's playlist (file sources)."""
        resumed = self.resumed.get(camera)
        first_gop = resumed.next_gop if resumed else 0
        watch = ProgressWatch(Path(self.settings.sink.output_dir), camera, stall_timeout, first_gop)
        while True:
            self.supervise()
            result = watch.poll(gateway, self.state_dir / "logs", on_progress)
            if result is not None:
                return result
            time.sleep(0.2)


def require_model(settings: Settings) -> None:
    inference = settings.inference
    if inference.model_path.is_file():
        return
    if inference.model_file:  # a model the user brought (e.g. a YOLO export): we cannot build it
        raise SetupError(
            f"model file {inference.model_path} (inference.model_file) does not exist: "
            "point FRAMEPIPE_INFERENCE__MODEL_FILE at your ONNX export"
        )
    raise SetupError(
        f"face model {inference.model_path} is missing: run `make models` (or `framepipe models build`)"
    )
