"""Alert and recording rules (real promtool), the dashboard, and the monitoring manifests
(``kubectl kustomize`` + the Prometheus operator's CRD schemas + the Kubernetes schemas)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from prometheus_client import REGISTRY

from framepipe.cluster import monitoring
from framepipe.cluster.manifests import render_tree
from framepipe.cluster.workloads import METRICS_PORT, STAGES
from framepipe.core import health
from framepipe.core.loader import load_settings
from tests.helpers import REPO
from tests.manifests import K8S_VERSION, Obj, crd_schema, kubectl_or_skip, kustomize

CRDS = Path(__file__).with_name("crds") / "prometheus-operator"
#: metric names in a PromQL expression (recording rules have colons, raw metrics not).
METRIC = re.compile(r"\b(framepipe[:_][a-z0-9_:]*)")


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not found (Debian package `prometheus`)")
    return binary


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


class TestRules:
    """rules.yml is valid Prometheus, its unit tests pass, and they can fail."""

    def test_rules_check(self) -> None:
        """`promtool check rules` accepts every rule."""
        result = _run(_promtool(), "check", "rules", str(monitoring.RULES))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 20 rules found" in result.stdout

    def test_rule_unit_tests_pass(self) -> None:
        """`promtool test rules` passes every alert and recording test of rules_test.yml."""
        result = _run(_promtool(), "test", "rules", "rules_test.yml", cwd=monitoring.FILES)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_a_changed_threshold_fails_the_unit_tests(self, tmp_path: Path) -> None:
        """With the backlog-age target at 300 s the backlog test no longer sees its alert."""
        rules = monitoring.RULES.read_text()
        assert "(framepipe_backlog_age_seconds) > 30\n" in rules
        rules = rules.replace(
            "(framepipe_backlog_age_seconds) > 30\n", "(framepipe_backlog_age_seconds) > 300\n"
        )
        (tmp_path / "rules.yml").write_text(rules)
        shutil.copy(monitoring.FILES / "rules_test.yml", tmp_path)
        result = _run(_promtool(), "test", "rules", "rules_test.yml", cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "FramepipeBacklogAgeHigh" in result.stdout + result.stderr

    def test_rules_and_dashboard_use_only_metrics_that_exist(self) -> None:
        """Every raw metric in the rules and the dashboard is one framepipe exports, every
        recording rule the dashboard uses is defined (a renamed metric fails here)."""
        assert health.BACKLOG_AGE is not None  # registers the framepipe metrics
        exported = {
            name
            for family in REGISTRY.collect()
            for name in (family.name, f"{family.name}_total", f"{family.name}_bucket")
        }
        groups = monitoring.rule_groups()
        recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
        exprs = [rule["expr"] for group in groups for rule in group["rules"]]
        dashboard = json.loads(monitoring.DASHBOARD.read_text())
        panel_exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        used = {name for expr in exprs + panel_exprs for name in METRIC.findall(expr)} - {
            monitoring.STAGE_LABEL
        }
        assert used - recorded <= exported, sorted(used - recorded - exported)
        assert used & recorded == recorded - {"framepipe:stage_gops:rate1m"}, "a recording rule no one uses"


def _crd_schema(kind: str) -> tuple[str, Obj]:
    found = crd_schema(CRDS, kind)
    assert found is not None, f"no CRD for {kind} in {CRDS}"
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """`kubectl kustomize` of k8s/monitoring and of the cpu overlay, freshly rendered."""
    kubectl = kubectl_or_skip()
    root = tmp_path_factory.mktemp("k8s")
    render_tree(load_settings(None, env={}), root)
    return {name: kustomize(kubectl, root / name) for name in ("monitoring", "overlays/cpu")}


class TestMonitoringManifests:
    """k8s/monitoring renders and its objects pass the real schemas."""

    def test_operator_objects_validate_against_their_crds(self, rendered: dict[str, list[Obj]]) -> None:
        """PodMonitor and PrometheusRule pass the Prometheus operator's CRD schemas (strict)."""
        objects = [o for o in rendered["monitoring"] if o["apiVersion"].startswith("monitoring.coreos.com/")]
        assert sorted(o["kind"] for o in objects) == ["PodMonitor", "PrometheusRule"]
        for obj in objects:
            api_version, schema = _crd_schema(obj["kind"])
            assert obj["apiVersion"] == api_version
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
            assert not errors, f"{obj['kind']}: {errors[0].message} at {list(errors[0].path)}"

    def test_a_wrong_field_fails_the_crd_schema(self, rendered: dict[str, list[Obj]]) -> None:
        """The schema check can fail: a misspelt endpoint field is refused."""
        monitor = copy.deepcopy(next(o for o in rendered["monitoring"] if o["kind"] == "PodMonitor"))
        monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
        assert not jsonschema.Draft7Validator(_crd_schema("PodMonitor")[1]).is_valid(monitor)

    def test_dashboard_config_map_validates(self, rendered: dict[str, list[Obj]]) -> None:
        """The dashboard ConfigMap passes the Kubernetes schema and holds the dashboard."""
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        config_map = next(o for o in rendered["monitoring"] if o["kind"] == "ConfigMap")
        kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["framepipe.json"])["uid"] == "framepipe"

    def test_rule_carries_the_tested_rules(self, rendered: dict[str, list[Obj]]) -> None:
        """The PrometheusRule's groups are rules.yml's, the ones promtool tests."""
        rule = next(o for o in rendered["monitoring"] if o["kind"] == "PrometheusRule")
        assert rule["spec"]["groups"] == monitoring.rule_groups()

    def test_pod_monitor_scrapes_the_stage_pods(self, rendered: dict[str, list[Obj]]) -> None:
        """The PodMonitor selects every consumer stage's pods, which have the named port."""
        monitor = next(o for o in rendered["monitoring"] if o["kind"] == "PodMonitor")
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        wanted = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
        assert wanted == set(STAGES)
        deployments = [o for o in rendered["overlays/cpu"] if o["kind"] == "Deployment"]
        matched = set()
        for deployment in deployments:
            pod = deployment["spec"]["template"]
            component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
            if component in wanted:
                assert all(
                    pod["metadata"]["labels"][k] == v
                    for k, v in monitor["spec"]["selector"]["matchLabels"].items()
                )
                ports = {
                    p["name"]: p["containerPort"]
                    for c in pod["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                assert ports.get(endpoint["port"]) == METRICS_PORT, component
                matched.add(component)
        assert matched == wanted
        assert monitor["metadata"]["namespace"] == "framepipe"

    def test_committed_tree_has_the_monitoring_files(self) -> None:
        """k8s/monitoring is checked in (test_k8s keeps the whole tree equal to the render)."""
        assert (REPO / "k8s" / "monitoring" / "kustomization.yaml").is_file()
