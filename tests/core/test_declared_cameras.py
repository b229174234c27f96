"""Cameras declared in the config file (``[[cameras]]`` / ``[cameras.NAME]``): read by the real
loader from real TOML files, refused in one line, rendered as gateway Deployments + Secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from framepipe.cluster.manifests import check_tree, render_tree
from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_config
from framepipe.core.settings.cameras import DeclaredCamera
from tests.manifests import kubectl_or_skip, kustomize

TWO_FORMS = """
[[cameras]]
name = "door"
source = "rtsp://door.example.invalid/stream"
mode = "overlay"

[[cameras]]
name = "yard_2"
source = "https://yard.example.invalid:8443/live.ts"
pacing = "realtime"
"""

TABLES = """
[cameras.door]
source = "rtsp://door.example.invalid/stream"

[cameras.lobby]
source = "clip.mp4"
"""


GOOD = 'name = "a"\nsource = "rtsp://h/x"'
GOOD_UPPER = 'name = "A"\nsource = "rtsp://h/y"'


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "framepipe.toml"
    path.write_text(text)
    return path


class TestDeclaredCameras:
    def test_both_forms_give_the_same_records(self, tmp_path: Path) -> None:
        """An array of tables and tables by name both load, in file order, with defaults."""
        listed = load_config(config(tmp_path, TWO_FORMS), env={}).cluster.cameras
        assert listed == (
            DeclaredCamera("door", "rtsp://door.example.invalid/stream", None, "overlay"),
            DeclaredCamera("yard_2", "https://yard.example.invalid:8443/live.ts", "realtime", None),
        )
        tables = load_config(config(tmp_path, TABLES), env={}).cluster.cameras
        assert [(c.name, c.source, c.is_live) for c in tables] == [
            ("door", "rtsp://door.example.invalid/stream", True),
            ("lobby", "clip.mp4", False),
        ]
        assert load_config(None, env={}).cluster.cameras == ()

    @pytest.mark.parametrize(
        ("entries", "says"),
        [
            (f"{GOOD}\n[[cameras]]\n{GOOD}", "camera a is declared twice"),
            (f"{GOOD}\n[[cameras]]\n{GOOD_UPPER}", "cameras a and A would get the same Kubernetes name"),
            ('name = "a"\nsource = "ftp://h/x"', "cameras.a.source ftp://... is not a source URL"),
            ('name = "a"\nsource = "rtsp:///x"', "cameras.a.source rtsp:///x has no host"),
            ('name = "a"\nsource = "rtsp://h:port/x"', "cameras.a.source is not a valid URL"),
            ('name = "a"\nsource = "rtsp://u:secret@h/x"', "cameras.a.source has a password in it"),
            ('name = "a"\nsource = ""', "cameras.a.source is empty"),
            ('name = "a"', "cameras.a has no source"),
            ('source = "rtsp://h/x"', "[[cameras]] entry 1 has no name"),
            ('name = "a b"\nsource = "rtsp://h/x"', "camera name 'a b' is invalid"),
            (f"{GOOD}\nfps = 5", "unknown setting cameras.a.fps"),
            (f'{GOOD}\nmode = "sepia"', "cameras.a.mode must be one of burn-in, overlay"),
            (f'{GOOD}\npacing = "slow"', "cameras.a.pacing must be one of realtime, fast"),
            ('name = "a"\nsource = 5', "cameras.a.source must be a string"),
            (f'{GOOD}\nthermal_of = "a"', "cameras.a.thermal_of: a camera cannot be its own thermal camera"),
            (f'{GOOD}\nthermal_of = "door"', "cameras.a.thermal_of: no camera door is declared"),
            (f'{GOOD}\n[[cameras]]\nname = "t1"\nsource = "rtsp://h/t1"\nthermal_of = "a"\n'
             '[[cameras]]\nname = "t2"\nsource = "rtsp://h/t2"\nthermal_of = "t1"',
             "cameras.t2.thermal_of: t1 is itself a thermal camera"),
            (f'{GOOD}\n[[cameras]]\nname = "t1"\nsource = "rtsp://h/t1"\nthermal_of = "a"\n'
             '[[cameras]]\nname = "t2"\nsource = "rtsp://h/t2"\nthermal_of = "a"',
             "cameras.t2.thermal_of: a already has thermal camera t1"),
        ],
    )  # fmt: skip
    def test_bad_entries_are_one_line_each(self, tmp_path: Path, entries: str, says: str) -> None:
        """Each problem is one ConfigError naming the camera and the field, and the secret never."""
        with pytest.raises(ConfigError) as caught:
            load_config(config(tmp_path, f"[[cameras]]\n{entries}\n"), env={})
        message = str(caught.value)
        assert says in message
        assert "\n" not in message
        assert "secret" not in message

    def test_a_thermal_camera_is_rendered_with_its_pairing(self, tmp_path: Path) -> None:
        """A declared ``thermal_of`` reaches the gateway's args and the pairing label, as
        ``cameras add --thermal-of`` makes them."""
        thermal = 'name = "door_ir"\nsource = "rtsp://ir.example.invalid/s"\nthermal_of = "door"\n'
        text = f"{TWO_FORMS}\n[[cameras]]\n{thermal}"
        loaded = load_config(config(tmp_path, text), env={})
        assert loaded.cluster.cameras[-1].thermal_of == "door"
        root = tmp_path / "k8s"
        render_tree(loaded.settings, root, loaded.cluster)
        deployment = next(
            d
            for d in yaml.safe_load_all((root / "cameras" / "door_ir.yaml").read_text())
            if d["kind"] == "Deployment"
        )
        assert deployment["metadata"]["labels"]["framepipe.io/thermal-of"] == "door"
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-2:] == ["--thermal-of", "door"]

    def test_rendered_as_gateway_deployments_with_secrets(self, tmp_path: Path) -> None:
        """`k8s render` writes cameras/ (one Deployment + Secret per camera); kustomize builds it
        and the URL is only in the Secret; an undeclared camera's file is pruned."""
        loaded = load_config(config(tmp_path, TWO_FORMS), env={})
        root = tmp_path / "k8s"
        render_tree(loaded.settings, root, loaded.cluster)
        assert sorted(p.name for p in (root / "cameras").iterdir()) == [
            "door.yaml",
            "kustomization.yaml",
            "yard_2.yaml",
        ]
        objects = kustomize(kubectl_or_skip(), root / "cameras")
        deployments = {
            o["metadata"]["labels"]["framepipe.io/camera"]: o for o in objects if o["kind"] == "Deployment"
        }
        secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        assert set(deployments) == {"door", "yard_2"}
        assert (
            secrets["framepipe-camera-yard-2"]["stringData"]["url"]
            == "https://yard.example.invalid:8443/live.ts"
        )
        args = deployments["door"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-4:] == ["--camera", "door", "--source", "$(FRAMEPIPE_SOURCE_URL)"]
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        for obj in objects:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
        # Drop one camera from the file: its manifest goes, the other stays, and check agrees.
        one = load_config(config(tmp_path, TWO_FORMS.split('[[cameras]]\nname = "yard_2"')[0]), env={})
        assert check_tree(one.settings, root, one.cluster) == [
            "cameras/kustomization.yaml: differs from the rendered config",
            "cameras/yard_2.yaml: not generated (stale?)",
        ]
        render_tree(one.settings, root, one.cluster)
        assert sorted(p.name for p in (root / "cameras").iterdir()) == ["door.yaml", "kustomization.yaml"]
