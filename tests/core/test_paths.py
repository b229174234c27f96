"""The models folder is found from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from framepipe.core.paths import models_dir_candidates, resolve_models_dir
from framepipe.core.settings import Settings
from tests.helpers import FACE_MODEL


class TestModelsDir:
    def test_found_from_another_directory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With the default setting, a run started in another folder finds the checkout's built
        model (it looked for ./.cache/models and failed before)."""
        if not FACE_MODEL.is_file():
            pytest.skip("models not built (`make models`)")
        monkeypatch.chdir(tmp_path)
        path = Settings().inference.model_path
        assert path.is_file()
        assert path.resolve() == FACE_MODEL.resolve()

    def test_an_explicit_setting_is_used_as_given(self, tmp_path: Path) -> None:
        """A models_dir other than the default is taken literally (~ expanded)."""
        assert resolve_models_dir(str(tmp_path / "mine")) == tmp_path / "mine"
        assert resolve_models_dir("~/models") == Path.home() / "models"

    def test_user_cache_is_the_last_place_and_follows_xdg(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The user cache ($XDG_CACHE_HOME/framepipe/models) is looked in last, and is where a
        build goes when no folder has the models yet."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        candidates = models_dir_candidates()
        assert candidates[0] == Path(".cache/models")
        assert candidates[-1] == tmp_path / "framepipe" / "models"
