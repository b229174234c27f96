"""Kubernetes objects for NATS JetStream, plus the helpers every workload shares.

NATS runs as a StatefulSet of the official ``nats`` image with a file store on
a PVC, one account for framepipe and (with ``k8s.nats_auth``) one user per
process kind whose publish/subscribe permissions cover only its own subjects.
Passwords come from the ``framepipe-nats-auth`` Secret through environment
variables that ``nats.conf`` references (``$DECODER_PASSWORD``...). The user/permission
table lives in ``nats_auth`` so the embedded local server enforces the same rules.
"""

from __future__ import annotations

import json
from typing import Any

from framepipe.core.auth import permissions
from framepipe.core.cluster_settings import ClusterConfig, Resources
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.topology import USERS

Obj = dict[str, Any]

APP = "framepipe"
NATS = "framepipe-nats"
NATS_HEADLESS = "framepipe-nats-headless"
NATS_MONITORING = "framepipe-nats-monitoring"
NATS_CONFIG = "framepipe-nats-config"
NATS_AUTH = "framepipe-nats-auth"
CLIENT_LABEL = "framepipe.io/nats-client"
CLIENT_PORT = 4222
CLUSTER_PORT = 6222
NATS_UID = 1000
NATS_STORE = "/data/jetstream"
NATS_PID = "/var/run/nats/nats.pid"
#: the PriorityClass of NATS and the camera gateways (cluster/scheduling.py renders it).
INGEST_PRIORITY = "framepipe-ingest"


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": "framepipe",
    }


def selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def meta(name: str, component: str, **extra: Any) -> Obj:
    return {"name": name, "labels": labels(component), **extra}


def resources(res: Resources, **extra_limits: str) -> Obj:
    return {
        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
        "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit, **extra_limits},
    }


def pod_security(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def svc_host(name: str, cluster: ClusterConfig) -> str:
    return f"{name}.{cluster.k8s.namespace}.svc.cluster.local"


def monitoring_endpoint(settings: Settings, cluster: ClusterConfig) -> str:
    """``host:port`` KEDA polls for ``/jsz``: the headless Service.

    In a clustered NATS KEDA reads each consumer from its leader. It finds the
    nodes from ``/varz``: the advertised client URLs (pod IPs) with this port, or,
    with none advertised, ``<server>.<this host>`` from the route URLs. Only the
    headless Service makes that second name resolve (``framepipe-nats-0.<headless>``),
    and the NetworkPolicy lets the KEDA namespace reach every pod's monitoring port.
    """
    if cluster.k8s.nats_monitoring_endpoint:
        return cluster.k8s.nats_monitoring_endpoint
    return f"{svc_host(NATS_HEADLESS, cluster)}:{settings.nats.monitor_port}"


def trigger_account(cluster: ClusterConfig) -> str:
    """The account KEDA reads from ``/jsz``; ``$G`` when NATS runs without accounts."""
    return cluster.k8s.nats_account if cluster.k8s.nats_auth else "$G"


def password_env(user: str) -> str:
    return f"{user.upper()}_PASSWORD"


def client_url(cluster: ClusterConfig, user: str) -> str:
    """``FRAMEPIPE_NATS__URL`` for a process; ``$(NATS_PASSWORD)`` is expanded by the kubelet."""
    host = f"{svc_host(NATS, cluster)}:{CLIENT_PORT}"
    if not cluster.k8s.nats_auth:
        return f"nats://{host}"
    return f"nats://{user}:$(NATS_PASSWORD)@{host}"


def nats_client_env(cluster: ClusterConfig, user: str) -> list[Obj]:
    env: list[Obj] = []
    if cluster.k8s.nats_auth:
        env.append({"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": NATS_AUTH, "key": user}}})
    env.append({"name": "FRAMEPIPE_NATS__URL", "value": client_url(cluster, user)})
    return env


def nats_store_bytes(cluster: ClusterConfig) -> int:
    """JetStream file store limit: 90% of the PVC, leaving room for the filesystem."""
    return cluster.k8s.nats_storage_gib * 1024**3 * 9 // 10


def nats_conf(settings: Settings, cluster: ClusterConfig, *, store_dir: str = NATS_STORE) -> str:
    """The server configuration (``nats-server -c``); env variables fill ``$NAMES``."""
    k = cluster.k8s
    store = nats_store_bytes(cluster)
    if settings.streams.video_max_bytes > store:
        raise ConfigError(
            f"streams.video_max_bytes ({settings.streams.video_max_bytes}) exceeds the JetStream store "
            f"of one NATS volume ({store}); raise k8s.nats_storage_gib"
        )
    q = json.dumps
    lines = [
        "# Generated by `framepipe k8s render` from framepipe/core (topology, settings); do not edit.",
        "server_name: $POD_NAME",
        f"port: {CLIENT_PORT}",
        f"http_port: {settings.nats.monitor_port}",
        f"pid_file: {q(NATS_PID)}",
        f"max_payload: {settings.nats.max_payload}",
        f"max_pending: {max(64 * 1024 * 1024, 4 * settings.nats.max_payload)}",
        'lame_duck_duration: "30s"',
        'lame_duck_grace_period: "10s"',
        "jetstream {",
        f"  store_dir: {q(store_dir)}",
        f"  max_file_store: {store}",
        f"  max_memory_store: {256 * 1024 * 1024}",
        # nats.sync_interval, as locally (docs/reliability.md, durability); the server's own by default.
        *([f"  sync_interval: {q(sync)}"] if (sync := settings.nats.sync_interval) != "default" else []),
        "}",
    ]
    if k.nats_replicas > 1:
        routes = ", ".join(
            q(f"nats://{NATS}-{i}.{svc_host(NATS_HEADLESS, cluster)}:{CLUSTER_PORT}")
            for i in range(k.nats_replicas)
        )
        lines += [
            "cluster {",
            '  name: "framepipe"',
            f"  port: {CLUSTER_PORT}",
            f"  routes: [{routes}]",
            "}",
        ]
    if k.nats_auth:
        lines += ["accounts {", f"  {k.nats_account} {{", "    jetstream: enabled", "    users: ["]
        for user in USERS:
            perms = permissions(user)
            if k.nats_strict_permissions:
                grant = (
                    f", permissions: {{publish: {{allow: {q(perms['publish'])}}}, "
                    f"subscribe: {{allow: {q(perms['subscribe'])}}}}}"
                )
            else:
                grant = ""
            lines.append(f"      {{user: {q(user)}, password: ${password_env(user)}{grant}}}")
        lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


DEV_PASSWORD_PREFIX = "change-me-"
MIN_PASSWORD_LENGTH = 12


def nats_auth_env() -> str:
    """Development passwords for the auth Secret; replace them (see docs/kubernetes.md)."""
    lines = ["# Development passwords: replace with a secretGenerator `behavior: replace` overlay."]
    lines += [f"{user}={DEV_PASSWORD_PREFIX}{user}-password" for user in USERS]
    return "\n".join(lines) + "\n"


def operator_auth_env(text: str, source: str) -> str:
    """The auth Secret's env file from an operator's ``user=password`` lines, checked:
    every NATS user once, none unknown, none a development ``change-me-*`` password."""
    passwords: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition("=")
        user, password = user.strip(), password.strip()
        if not sep or user not in USERS:
            raise ConfigError(
                f"{source}:{number}: expected `user=password` with a user of {', '.join(USERS)}"
            )
        if password.startswith(DEV_PASSWORD_PREFIX) or len(password) < MIN_PASSWORD_LENGTH:
            raise ConfigError(
                f"{source}:{number}: the password of {user} is a development one or shorter than "
                f"{MIN_PASSWORD_LENGTH} characters; generate one, e.g. `openssl rand -hex 24`"
            )
        passwords[user] = password
    missing = [user for user in USERS if user not in passwords]
    if missing:
        raise ConfigError(f"{source}: no password for {', '.join(missing)} (one `user=password` line each)")
    return "".join(f"{user}={passwords[user]}\n" for user in USERS)


def _probe(path: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": "monitor"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def nats_objects(settings: Settings, cluster: ClusterConfig, config_hash: str) -> list[Obj]:
    """StatefulSet, Services and PodDisruptionBudget of the NATS servers."""
    k = cluster.k8s
    monitor = settings.nats.monitor_port
    env: list[Obj] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    if k.nats_auth:
        env += [
            {
                "name": password_env(user),
                "valueFrom": {"secretKeyRef": {"name": NATS_AUTH, "key": user}},
            }
            for user in USERS
        ]
    ports = [
        {"name": "client", "containerPort": CLIENT_PORT},
        {"name": "cluster", "containerPort": CLUSTER_PORT},
        {"name": "monitor", "containerPort": monitor},
    ]
    volume_claim: Obj = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{k.nats_storage_gib}Gi"}},
        },
    }
    if k.nats_storage_class:
        volume_claim["spec"]["storageClassName"] = k.nats_storage_class
    statefulset: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(NATS, "nats"),
        "spec": {
            "serviceName": NATS_HEADLESS,
            "replicas": k.nats_replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector("nats")},
            "template": {
                "metadata": {
                    "labels": labels("nats"),
                    "annotations": {"framepipe.io/config-hash": config_hash},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "priorityClassName": INGEST_PRIORITY,
                    "securityContext": pod_security(NATS_UID),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector("nats")},
                        }
                    ],
                    "containers": [
                        {
                            "name": "nats",
                            "image": k.nats_image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["--config", "/etc/nats/nats.conf"],
                            "env": env,
                            "ports": ports,
                            "startupProbe": _probe("/healthz", 10, 90),
                            "livenessProbe": _probe("/healthz?js-enabled-only=true", 30, 3),
                            "readinessProbe": _probe("/healthz?js-server-only=true", 10, 3),
                            "lifecycle": {
                                "preStop": {"exec": {"command": ["nats-server", f"-sl=ldm={NATS_PID}"]}}
                            },
                            "resources": resources(cluster.resources.nats),
                            "securityContext": container_security(),
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/nats", "readOnly": True},
                                {"name": "data", "mountPath": "/data"},
                                {"name": "run", "mountPath": "/var/run/nats"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": NATS_CONFIG}},
                        {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [volume_claim],
        },
    }

    def service(name: str, svc_ports: list[Obj], **spec: Any) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name, "nats"),
            "spec": {"selector": selector("nats"), "ports": svc_ports, **spec},
        }

    def port(name: str, number: int) -> Obj:
        return {
            "name": name,
            "port": number,
            "targetPort": name,
            "appProtocol": "tcp" if name != "monitor" else "http",
        }

    quorum = k.nats_replicas // 2 + 1
    pdb: Obj = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(NATS, "nats"),
        "spec": {"minAvailable": quorum, "selector": {"matchLabels": selector("nats")}},
    }
    return [
        statefulset,
        service(NATS, [port("client", CLIENT_PORT)]),
        service(
            NATS_HEADLESS,
            [port("client", CLIENT_PORT), port("cluster", CLUSTER_PORT), port("monitor", monitor)],
            clusterIP="None",
            publishNotReadyAddresses=True,
        ),
        service(NATS_MONITORING, [port("monitor", monitor)]),
        pdb,
    ]


def network_policies(settings: Settings, cluster: ClusterConfig) -> list[Obj]:
    """Only framepipe pods reach the client port; KEDA reaches monitoring; servers route."""
    nats_pods = {"podSelector": {"matchLabels": selector("nats")}}

    def tcp(number: int) -> Obj:
        return {"protocol": "TCP", "port": number}

    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(NATS, "nats"),
            "spec": {
                "podSelector": {"matchLabels": selector("nats")},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchLabels": {"app.kubernetes.io/part-of": APP, CLIENT_LABEL: "true"}
                                }
                            }
                        ],
                        "ports": [tcp(CLIENT_PORT)],
                    },
                    {"from": [nats_pods], "ports": [tcp(CLUSTER_PORT), tcp(settings.nats.monitor_port)]},
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": cluster.k8s.keda_namespace}
                                }
                            }
                        ],
                        "ports": [tcp(settings.nats.monitor_port)],
                    },
                ],
            },
        }
    ]
