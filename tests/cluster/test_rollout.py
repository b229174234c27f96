"""Apply the cpu overlay to a real cluster and wait for it to roll out.

Runs only with KUBECONFIG pointing at a disposable cluster that has KEDA
installed and can pull the framepipe image (``k8s.image``); it creates the
``framepipe`` namespace and leaves it in place for inspection.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from framepipe.cli.k8s import app
from framepipe.cluster.manifests import kubectl
from framepipe.cluster.workloads import STAGES, deployment_name
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.topology import SCALED_STAGES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to apply the manifests to"
    ),
]

NS = ClusterConfig().k8s.namespace


def test_apply_rolls_out_and_keda_takes_over() -> None:
    """`framepipe k8s apply` succeeds; NATS, the setup Job and every stage become ready;
    each ScaledObject is Ready and KEDA created its HPA."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["apply", "--overlay", "cpu"])
    assert result.exit_code == 0, result.output
    kubectl(["-n", NS, "rollout", "status", "statefulset/framepipe-nats", "--timeout=300s"], timeout=320)
    kubectl(
        [
            "-n",
            NS,
            "wait",
            "--for=condition=complete",
            "job",
            "-l",
            "app.kubernetes.io/component=setup",
            "--timeout=300s",
        ],
        timeout=320,
    )
    for stage in STAGES:
        kubectl(
            ["-n", NS, "rollout", "status", f"deployment/{deployment_name(stage)}", "--timeout=300s"],
            timeout=320,
        )
    deadline = time.monotonic() + 180
    for stage in SCALED_STAGES:
        while True:
            so = json.loads(kubectl(["-n", NS, "get", "scaledobject", deployment_name(stage), "-o", "json"]))
            ready = {c["type"]: c["status"] for c in so.get("status", {}).get("conditions", [])}.get("Ready")
            if ready == "True":
                break
            assert time.monotonic() < deadline, f"ScaledObject {stage} not Ready: {so.get('status')}"
            time.sleep(5)
        hpa = so["status"].get("hpaName") or f"keda-hpa-{deployment_name(stage)}"
        kubectl(["-n", NS, "get", "hpa", hpa, "-o", "name"])
