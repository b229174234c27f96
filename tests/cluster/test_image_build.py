"""The container images as the manifests expect them: tags, stages, user, build context.

Cheap and CI-able (no image is built): `make image` is slow and opt-in, and its smoke test
(`make image-test`, docker/image_smoke.sh) is run by hand. These tests keep what it built
in step with the rest: the Makefile's tags are the manifests' images, the GPU Dockerfile has
the CPU one's stages and runtime, and the build context holds what the Dockerfiles copy.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import framepipe
from framepipe.cluster.workloads import APP_UID
from framepipe.core.cluster_settings import K8sSettings
from tests.helpers import REPO

DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile", "gpu": REPO / "docker" / "Dockerfile.gpu"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` of each instruction, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("#"))
    )
    return [
        (keyword.upper(), " ".join(rest.split()))
        for keyword, _, rest in (line.strip().partition(" ") for line in joined.splitlines() if line.strip())
    ]


def stages(path: Path) -> list[str]:
    return [args.split()[-1] for keyword, args in instructions(path) if keyword == "FROM"]


def runtime_instructions(path: Path) -> list[tuple[str, str]]:
    """The instructions of the last stage (the image itself)."""
    steps = instructions(path)
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start + 1 :]


def make_tags() -> tuple[str, str]:
    """The tags `make image` and `make image-gpu` give (their defaults: no IMAGE from the environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "GPU_IMAGE", "MAKEFLAGS")}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "image-tags"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    cpu, gpu = result.stdout.split()
    return cpu, gpu


class TestImageTags:
    """`make image` tags what the manifests run."""

    def test_make_tags_are_the_k8s_defaults_at_the_package_version(self) -> None:
        """make image-tags prints K8sSettings' image and gpu_image, tagged with the package version."""
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        cpu, gpu = make_tags()
        assert (cpu, gpu) == (K8sSettings().image, K8sSettings().gpu_image)
        assert cpu.endswith(f":{version}")
        assert gpu.endswith(f":{version}")
        assert framepipe.__version__ == version

    def test_committed_manifests_name_the_made_images(self) -> None:
        """Every framepipe container in k8s/ runs the CPU tag, the gpu overlay's inference the GPU tag."""
        cpu, gpu = make_tags()
        seen: dict[str, set[str]] = {}
        for path in sorted((REPO / "k8s").rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                for image in re.findall(r"'image': '([^']+)'", repr(doc)):
                    seen.setdefault(image, set()).add(str(path.relative_to(REPO)))
        framepipe_images = {image for image in seen if "/framepipe/" in image}
        assert framepipe_images == {cpu, gpu}, seen
        assert seen[gpu] == {"k8s/overlays/gpu/inference-gpu.yaml"}
        assert {"k8s/base/stages.yaml", "k8s/base/setup-job.yaml", "k8s/camera/gateway.yaml"} <= seen[cpu]

    @pytest.mark.parametrize("flavour", ["cpu", "gpu"])
    def test_dockerfile_build_comment_uses_the_tag(self, flavour: str) -> None:
        """The `docker build ... -t TAG` line in each Dockerfile's header builds the Makefile's tag."""
        tag = dict(zip(("cpu", "gpu"), make_tags(), strict=True))[flavour]
        assert re.search(
            rf"docker build -f docker/{DOCKERFILES[flavour].name} -t {re.escape(tag)} \.",
            DOCKERFILES[flavour].read_text(),
        )


class TestDockerfiles:
    """The CPU and GPU Dockerfiles build the same way and give the pods what they expect."""

    def test_gpu_has_the_cpu_stages_and_build_args(self) -> None:
        """Same stages in the same order, same ARGs (BASE_IMAGE, PIP_CERT)."""
        assert (
            stages(DOCKERFILES["cpu"]) == stages(DOCKERFILES["gpu"]) == ["deps", "models", "app", "runtime"]
        )
        args = {
            flavour: {a.split("=")[0] for k, a in instructions(path) if k == "ARG"}
            for flavour, path in DOCKERFILES.items()
        }
        assert args["cpu"] == args["gpu"] == {"BASE_IMAGE", "PIP_CERT"}

    def test_runtimes_agree_and_run_as_the_pods_uid(self) -> None:
        """Same USER (the manifests' runAsUser), WORKDIR, ENTRYPOINT, EXPOSE and models dir; no ARG leaks."""
        picked = {}
        for flavour, path in DOCKERFILES.items():
            steps = runtime_instructions(path)
            picked[flavour] = {
                k: a for k, a in steps if k in ("USER", "WORKDIR", "ENTRYPOINT", "EXPOSE", "CMD")
            }
            env = " ".join(a for k, a in steps if k == "ENV")
            assert "FRAMEPIPE_INFERENCE__MODELS_DIR=/opt/framepipe/models" in env, flavour
            assert "HOME=/tmp" in env, flavour
            assert "PIP_CERT" not in " ".join(a for _, a in steps), flavour
        assert picked["cpu"] == picked["gpu"]
        assert picked["cpu"]["USER"] == f"{APP_UID}:{APP_UID}"
        assert picked["cpu"]["WORKDIR"] == "/tmp"

    def test_build_context_holds_what_the_dockerfiles_copy(self) -> None:
        """No COPY source (pyproject, README, framepipe/, docker/prune-venv.sh, hls.js) is ignored."""
        ignored = [
            p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")
        ]
        sources = {"framepipe/web/static/vendor/hls.min.js"}
        for path in DOCKERFILES.values():
            for keyword, args in instructions(path):
                if keyword == "COPY" and not args.startswith("--from"):
                    sources.update(args.split()[:-1])
        assert {"pyproject.toml", "README.md", "framepipe", "docker/prune-venv.sh"} <= sources
        for source in sources:
            assert (REPO / source).exists() or source.endswith("hls.min.js"), source
            parts = Path(source).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            hits = [p for p in ignored for prefix in prefixes if fnmatch.fnmatch(prefix, p.strip("/"))]
            assert not hits, f"{source} is excluded by .dockerignore {hits}"
