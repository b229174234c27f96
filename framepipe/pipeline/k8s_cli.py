"""``framepipe k8s``: render, check and apply the Kubernetes manifests; add cameras."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from framepipe.pipeline.config import ENV_PREFIX, Settings, load_settings
from framepipe.pipeline.errors import ConfigError, FramepipeError
from framepipe.pipeline.k8s import (
    OVERLAYS,
    check_tree,
    gateway_deployment,
    kubectl,
    kustomize_build,
    render_tree,
)
from framepipe.pipeline.k8s_settings import ClusterConfig, load_cluster_config

app = typer.Typer(help="Kubernetes manifests (kustomize base + cpu/gpu overlays) and cluster actions.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="framepipe TOML config (also \\[k8s] and \\[scaling.<stage>])."),
]
OverlayOpt = Annotated[str | None, typer.Option("--overlay", help=f"One of: {', '.join(OVERLAYS)}.")]
CLUSTER_TABLES = ("k8s", "scaling")


def load(config: Path | None) -> tuple[Settings, ClusterConfig]:
    """Settings (defaults ← file ← env) and the cluster tables of the same file."""
    path = config or (
        Path(os.environ[f"{ENV_PREFIX}CONFIG"]) if os.environ.get(f"{ENV_PREFIX}CONFIG") else None
    )
    if path is None:
        return load_settings(None, env=os.environ), ClusterConfig()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # load_settings does not know the cluster tables; feed it the rest through its env layer
    # (file values first, so the real environment still wins, as with --config).
    env: dict[str, str] = {}
    for section, values in data.items():
        if section in CLUSTER_TABLES:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table")
        env.update(
            {f"{ENV_PREFIX}{section.upper()}__{key.upper()}": _env_value(v) for key, v in values.items()}
        )
    env.update({k: v for k, v in os.environ.items() if k != f"{ENV_PREFIX}CONFIG"})
    return load_settings(None, env=env), load_cluster_config(path)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fail(exc: FramepipeError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def render(
    overlay: OverlayOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for the tree (default: ./k8s).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the manifest tree, or with --overlay print that overlay's `kubectl kustomize` output."""
    try:
        settings, cluster = load(config)
        if overlay is None:
            root = out or Path("k8s")
            written = render_tree(settings, root, cluster)
            typer.echo(f"wrote {len(written)} files under {root}/")
            return
        if out is not None:
            render_tree(settings, out, cluster)
        typer.echo(kustomize_build(settings, overlay, cluster), nl=False)
    except FramepipeError as exc:
        raise _fail(exc) from None


@app.command()
def check(
    root: Annotated[Path, typer.Option("--root", help="Tree to compare.")] = Path("k8s"),
    config: ConfigOpt = None,
) -> None:
    """Exit 1 when the committed manifests differ from what the config renders."""
    try:
        settings, cluster = load(config)
    except FramepipeError as exc:
        raise _fail(exc) from None
    problems = check_tree(settings, root, cluster)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo("run `framepipe k8s render` to update the manifests", err=True)
        raise typer.Exit(1)
    typer.echo(f"{root}/ matches the config")


def _require_cluster() -> None:
    if not os.environ.get("KUBECONFIG"):
        raise ConfigError("KUBECONFIG is not set: point it at the cluster to use (nothing was applied)")
    try:
        kubectl(["get", "crd", "scaledobjects.keda.sh", "-o", "name"], timeout=30)
    except FramepipeError:
        raise ConfigError(
            "KEDA is not installed in this cluster (no scaledobjects.keda.sh CRD); "
            "install it first, see docs/kubernetes.md"
        ) from None


@app.command()
def apply(
    overlay: Annotated[str, typer.Option("--overlay", help=f"One of: {', '.join(OVERLAYS)}.")] = "cpu",
    config: ConfigOpt = None,
) -> None:
    """`kubectl apply -k` an overlay rendered from the config (needs KUBECONFIG and KEDA)."""
    try:
        if overlay not in OVERLAYS:
            raise ConfigError(f"overlay must be one of {', '.join(OVERLAYS)}, got {overlay!r}")
        settings, cluster = load(config)
        _require_cluster()
        with tempfile.TemporaryDirectory() as tmp:
            render_tree(settings, Path(tmp), cluster)
            typer.echo(kubectl(["apply", "-k", str(Path(tmp) / "overlays" / overlay)]), nl=False)
    except FramepipeError as exc:
        raise _fail(exc) from None


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
    """Print (or --apply / --delete) the gateway Deployment of one camera."""
    try:
        settings, cluster = load(config)
        manifest = yaml.safe_dump(gateway_deployment(settings, cluster, name, source or "-"), sort_keys=False)
        if not source and not delete:
            raise ConfigError("a camera needs --source (rtsp://... or a file URL)")
        if not (do_apply or delete):
            typer.echo(manifest, nl=False)
            return
        _require_cluster()
        verb = ["delete", "--ignore-not-found", "-f", "-"] if delete else ["apply", "-f", "-"]
        typer.echo(kubectl(verb, stdin=manifest), nl=False)
    except FramepipeError as exc:
        raise _fail(exc) from None
