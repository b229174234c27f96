"""`framepipe models check` (what the image build and an operator run) and `framepipe --version`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import framepipe
from framepipe.cli.app import app
from framepipe.core.errors import SetupError
from framepipe.stages.inference.models import MODELS, check_models, onnx_path


def _fixed_batch_model(path: Path) -> None:
    """A real ONNX graph (Identity) whose input pins batch 1, as tflite2onnx leaves BlazeFace."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 3, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "pinned",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


class TestCheckModels:
    """check_models on the built models and on broken ones."""

    def test_built_models_pass_with_a_batch_of_two(self, models_dir: Path) -> None:
        """Both BlazeFace models open and run a batch of 2: one 'ok' line each."""
        lines = check_models(models_dir)
        assert len(lines) == len(MODELS)
        for name, line in zip(MODELS, lines, strict=True):
            assert line.startswith(f"{onnx_path(models_dir, name)}: ok")
            assert "'batch'" in line

    def test_missing_model_says_to_build(self, tmp_path: Path) -> None:
        """An empty models dir fails naming the file and `framepipe models build`."""
        with pytest.raises(SetupError, match=r"face_detection_full_range\.onnx is missing.*models build"):
            check_models(tmp_path)

    def test_unreadable_model_says_to_rebuild(self, tmp_path: Path) -> None:
        """A file that is not ONNX fails with ONNX Runtime's reason and the rebuild hint."""
        onnx_path(tmp_path, "full_range").write_bytes(b"not an onnx model")
        with pytest.raises(SetupError, match=r"ONNX Runtime cannot open .*rebuild it"):
            check_models(tmp_path, ("full_range",))

    def test_batch_pinned_model_is_refused(self, tmp_path: Path) -> None:
        """A graph with batch fixed at 1 (unconverted) fails: the stages batch images."""
        _fixed_batch_model(onnx_path(tmp_path, "full_range"))
        with pytest.raises(SetupError, match="pins its batch size"):
            check_models(tmp_path, ("full_range",))

    def test_cli_prints_each_model_and_fails_with_one_line(self, models_dir: Path, tmp_path: Path) -> None:
        """`framepipe models check` exits 0 with a line per model; on a missing model, 1 and one line."""
        runner = CliRunner()
        good = runner.invoke(app, ["models", "check", "--models-dir", str(models_dir)])
        assert good.exit_code == 0, good.output
        assert good.output.count(": ok") == len(MODELS)
        shutil.copy(onnx_path(models_dir, "full_range"), onnx_path(tmp_path, "full_range"))
        bad = runner.invoke(app, ["models", "check", "--models-dir", str(tmp_path)])
        assert bad.exit_code == 1
        assert "face_detection_short_range.onnx is missing" in bad.output
        assert "Traceback" not in bad.output


class TestVersion:
    """framepipe --version."""

    def test_prints_the_package_version(self) -> None:
        """`framepipe --version` prints `framepipe <version>` and exits 0 without a command."""
        result = CliRunner().invoke(app, ["--version"])
        assert result.exit_code == 0
        assert result.output.strip() == f"framepipe {framepipe.__version__}"
        assert result.output.count("\n") == 1
