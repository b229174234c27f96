"""The web server in a cluster: console, HLS and WebRTC (WHEP) behind one Deployment and Service.

HTTP (console, ``/api``, HLS, WHEP signalling) is TCP ``WEB_PORT`` behind the
Service. WebRTC media does not go through the Service: ICE offers the pod's own
address, and the pod's ephemeral UDP ports are narrowed to ``WEBRTC_UDP_PORTS``
with the namespaced, Kubernetes-"safe" sysctl ``net.ipv4.ip_local_port_range``
(aioice binds each session's socket to an ephemeral port), which the
NetworkPolicy opens. Browsers that cannot route to pod IPs need a TURN server
in ``webrtc.ice_servers`` (docs/kubernetes-web.md). One replica: a WHEP session
lives in the pod that answered it (a second replica would need the Service's
ClientIP affinity for ``DELETE`` to reach it, which the Service sets anyway).
The server binds 0.0.0.0, so it requires its token: ``token`` of the optional
Secret ``framepipe-web``, else one generated at start and printed to its log; the
same Secret's ``ice_credential`` is the TURN password (never in the ConfigMap).
"""

from __future__ import annotations

from framepipe.cluster.nats import Obj, meta, selector
from framepipe.cluster.workloads import _app_container, _pod_spec, _template, deployment_name
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.settings import Settings
from framepipe.core.topology import Names

WEB = "web"
WEB_PORT = 8090
WEB_TOKEN_SECRET = "framepipe-web"
#: the pod's ephemeral port range, so the UDP ports WebRTC uses are known (100 ≥ webrtc.max_viewers).
WEBRTC_UDP_PORTS = (40000, 40099)


def web_deployment(settings: Settings, cluster: ClusterConfig, config_hash: str) -> Obj:
    """``framepipe web`` on all addresses; NATS as the admin user, as the local console connects."""
    secrets = [
        {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": WEB_TOKEN_SECRET, "key": key, "optional": True}},
        }
        for variable, key in (
            ("FRAMEPIPE_WEB__TOKEN", "token"),
            ("FRAMEPIPE_WEBRTC__ICE_CREDENTIAL", "ice_credential"),
        )
    ]
    container = _app_container(
        settings,
        cluster,
        WEB,
        ["web", "--host", "0.0.0.0", "--port", str(WEB_PORT)],
        Names.ADMIN,
        probes=False,
        extra_env=secrets,
    )
    container["ports"] = [{"name": "http", "containerPort": WEB_PORT, "protocol": "TCP"}]

    def probe(period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    container["startupProbe"] = probe(5, 60)
    container["livenessProbe"] = probe(10, 6)
    container["readinessProbe"] = probe(5, 3)
    low, high = WEBRTC_UDP_PORTS
    pod = _pod_spec([container], 30)
    pod["securityContext"] = {
        **pod["securityContext"],
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": f"{low} {high}"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(deployment_name(WEB), WEB),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(WEB)},
            "template": _template(WEB, config_hash, pod, metrics=False),
        },
    }


def web_service() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(deployment_name(WEB), WEB),
        "spec": {
            "selector": selector(WEB),
            "ports": [{"name": "http", "port": WEB_PORT, "targetPort": "http", "protocol": "TCP"}],
            "sessionAffinity": "ClientIP",
        },
    }


def web_network_policy() -> Obj:
    """Anyone may reach the console's port and the WebRTC UDP range (the token guards HTTP;
    DTLS-SRTP with the fingerprint from the authenticated answer guards media)."""
    low, high = WEBRTC_UDP_PORTS
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(deployment_name(WEB), WEB),
        "spec": {
            "podSelector": {"matchLabels": selector(WEB)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP", "port": WEB_PORT},
                        {"protocol": "UDP", "port": low, "endPort": high},
                    ]
                }
            ],
        },
    }


def web_objects(settings: Settings, cluster: ClusterConfig, config_hash: str) -> list[Obj]:
    return [web_deployment(settings, cluster, config_hash), web_service(), web_network_policy()]
