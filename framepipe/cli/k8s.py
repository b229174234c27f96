"""``framepipe k8s``: render, check and apply the Kubernetes manifests; add cameras."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from framepipe.cli.errors import Typer
from framepipe.cluster.cameras import camera_objects, secret_name
from framepipe.cluster.manifests import OVERLAYS, check_tree, kubectl, kustomize_build, render_tree
from framepipe.cluster.nats import DEV_PASSWORD_PREFIX, operator_auth_env
from framepipe.cluster.workloads import gateway_deployment
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.errors import ConfigError, FramepipeError, SetupError
from framepipe.core.loader import load_config
from framepipe.core.settings import Settings

app = Typer(help="Kubernetes manifests (kustomize base + cpu/gpu overlays) and cluster actions.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="framepipe TOML config (also \\[k8s] and \\[scaling.<stage>])."),
]
OverlayOpt = Annotated[str | None, typer.Option("--overlay", help=f"One of: {', '.join(OVERLAYS)}.")]


def load(config: Path | None) -> tuple[Settings, ClusterConfig]:
    """Settings (defaults ← file ← env) and the cluster tables of the same file."""
    loaded = load_config(config)
    return loaded.settings, loaded.cluster


@app.command()
def render(
    overlay: OverlayOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for the tree (default: ./k8s).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the manifest tree, or with --overlay print that overlay's `kubectl kustomize` output."""
    settings, cluster = load(config)
    if overlay is None:
        root = out or Path("k8s")
        written = render_tree(settings, root, cluster)
        typer.echo(f"wrote {len(written)} files under {root}/")
        for camera in cluster.cameras:
            if camera.mode is not None:  # the encoders read modes from NATS, not from manifests
                typer.echo(
                    f"camera {camera.name}: mode {camera.mode} is applied by local runs only", err=True
                )
        if cluster.cameras:
            typer.echo(f"cameras: kubectl apply -k {root / 'cameras'}")
        return
    if out is not None:
        render_tree(settings, out, cluster)
    typer.echo(kustomize_build(settings, overlay, cluster), nl=False)


@app.command()
def check(
    root: Annotated[Path, typer.Option("--root", help="Tree to compare.")] = Path("k8s"),
    config: ConfigOpt = None,
) -> None:
    """Exit 1 when the committed manifests differ from what the config renders."""
    settings, cluster = load(config)
    problems = check_tree(settings, root, cluster)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo("run `framepipe k8s render` to update the manifests", err=True)
        raise typer.Exit(1)
    typer.echo(f"{root}/ matches the config")


def _require_cluster() -> None:
    if not os.environ.get("KUBECONFIG"):
        raise SetupError("KUBECONFIG is not set: point it at the cluster to use (nothing was applied)")
    try:
        kubectl(["get", "crd", "scaledobjects.keda.sh", "-o", "name"], timeout=30)
    except FramepipeError:
        raise SetupError(
            "KEDA is not installed in this cluster (no scaledobjects.keda.sh CRD); "
            "install it first, see docs/kubernetes.md"
        ) from None


def _nats_passwords(cluster: ClusterConfig, passwords: Path | None, dev: bool) -> str | None:
    """The operator's auth env file; None keeps the rendered development passwords (``--dev`` only)."""
    if not cluster.k8s.nats_auth:
        return None
    if passwords is not None:
        try:
            text = passwords.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read --nats-passwords {passwords}: {exc.strerror}") from None
        return operator_auth_env(text, str(passwords))
    if not dev:
        raise ConfigError(
            f"refusing to apply the development NATS passwords ({DEV_PASSWORD_PREFIX}*): pass "
            "--nats-passwords FILE (one `user=password` line per NATS user), or --dev for a throwaway cluster"
        )
    return None


@app.command()
def apply(
    overlay: Annotated[str, typer.Option("--overlay", help=f"One of: {', '.join(OVERLAYS)}.")] = "cpu",
    passwords: Annotated[
        Path | None,
        typer.Option(
            "--nats-passwords",
            help="Env file of `user=password` lines, one per NATS user: the auth Secret's content.",
        ),
    ] = None,
    dev: Annotated[
        bool,
        typer.Option("--dev", help=f"Allow the development `{DEV_PASSWORD_PREFIX}*` NATS passwords."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """`kubectl apply -k` an overlay rendered from the config (needs KUBECONFIG and KEDA)."""
    if overlay not in OVERLAYS:
        raise ConfigError(f"overlay must be one of {', '.join(OVERLAYS)}, got {overlay!r}")
    settings, cluster = load(config)
    auth = _nats_passwords(cluster, passwords, dev)
    _require_cluster()
    with tempfile.TemporaryDirectory() as tmp:
        render_tree(settings, Path(tmp), cluster)
        if auth is not None:
            (Path(tmp) / "base" / "nats-auth.env").write_text(auth)
        typer.echo(kubectl(["apply", "-k", str(Path(tmp) / "overlays" / overlay)]), nl=False)


@app.command()
def camera(
    name: Annotated[str, typer.Argument(help="Camera name (letters, digits, '_' or '-').")],
    source: Annotated[str, typer.Option("--source", help="rtsp://... or file URL the gateway reads.")] = "",
    do_apply: Annotated[
        bool, typer.Option("--apply", help="Apply to the cluster instead of printing.")
    ] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the camera's gateway from the cluster.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Print (or --apply / --delete) one camera's gateway Deployment and its source Secret."""
    settings, cluster = load(config)
    if delete:
        deployment = gateway_deployment(settings, cluster, name, "-")
        objects = [f"deployment/{deployment['metadata']['name']}", f"secret/{secret_name(name)}"]
        _require_cluster()
        namespace = ["-n", cluster.k8s.namespace]
        typer.echo(kubectl(["delete", "--ignore-not-found", *namespace, *objects]), nl=False)
        return
    if not source:
        raise ConfigError("a camera needs --source (rtsp://... or a file URL)")
    # The URL may hold credentials: it goes into a Secret, never into the Deployment spec.
    manifest = "---\n".join(
        yaml.safe_dump(obj, sort_keys=False) for obj in camera_objects(settings, cluster, name, source)
    )
    if not do_apply:
        typer.echo(manifest, nl=False)
        return
    _require_cluster()
    typer.echo(kubectl(["apply", "-f", "-"], stdin=manifest), nl=False)
