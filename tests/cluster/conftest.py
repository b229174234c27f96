"""Fixtures of the manifest tests: the default config and its freshly rendered, kustomized tree."""

from __future__ import annotations

import pytest

from framepipe.cluster.manifests import render_tree
from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from tests.manifests import Obj, kubectl_or_skip, kustomize


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The default config, no server (in place of tests/conftest.py's ``settings``)."""
    return load_settings(None, env={})


@pytest.fixture(scope="session")
def kubectl() -> str:
    return kubectl_or_skip()


@pytest.fixture(scope="session")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, kubectl: str
) -> dict[str, list[Obj]]:
    """``kubectl kustomize`` of each overlay and of the camera template, freshly rendered."""
    root = tmp_path_factory.mktemp("k8s")
    render_tree(settings, root)
    return {
        name: kustomize(kubectl, root / folder)
        for name, folder in (("cpu", "overlays/cpu"), ("gpu", "overlays/gpu"), ("camera", "camera"))
    }
