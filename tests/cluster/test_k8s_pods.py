"""The rendered pods: their env loads the settings, probes, hardening, network policy, web and setup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from framepipe.cluster.nats import (
    CLIENT_LABEL,
    USERS,
    password_env,
)
from framepipe.cluster.web import WEB_PORT, WEBRTC_UDP_PORTS
from framepipe.cluster.workloads import METRICS_PORT, STAGES, grace_seconds
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from tests.manifests import Obj, by_kind, pod_specs


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
