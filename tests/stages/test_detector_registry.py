"""The detector registry: every settable family has a plug-in, and each plug-in's config."""

from __future__ import annotations

from typing import get_args, get_type_hints

import pytest

from framepipe.core.errors import ConfigError
from framepipe.core.settings import InferenceSettings
from framepipe.stages.inference.detectors import families, plugin_for, register
from framepipe.stages.inference.detectors.blazeface import BlazeFaceConfig
from framepipe.stages.inference.detectors.yolo import YoloConfig

#: every value ``inference.model`` accepts, older aliases included.
_MODEL_NAMES: tuple[str, ...] = get_args(get_type_hints(InferenceSettings)["model"])


def _settings(model: str, **fields: object) -> InferenceSettings:
    model_file = "model.onnx" if model == "yolo" else ""
    return InferenceSettings(model=model, model_file=model_file, **fields)  # type: ignore[arg-type]


class TestDetectorRegistry:
    """inference.model → plug-in → config, without a model file or a backend."""

    def test_every_model_name_in_the_settings_resolves_to_a_plugin(self) -> None:
        """Each inference.model value (older aliases included) finds the plug-in for its family."""
        assert {"blazeface-full", "full_range", "yolo"} <= set(_MODEL_NAMES)
        for model in _MODEL_NAMES:
            family = _settings(model).family
            assert family in plugin_for(family).families, model

    def test_registered_families_are_the_ones_the_settings_accept(self) -> None:
        """No plug-in is unreachable from the settings and no settable family lacks one."""
        settable = {_settings(model).family for model in _MODEL_NAMES}
        assert sorted(families()) == sorted(settable)

    def test_unknown_family_is_a_config_error_naming_the_setting(self) -> None:
        """An unknown family fails on one line that names inference.model and the known ones."""
        with pytest.raises(ConfigError, match=r"inference\.model must be one of .*'yolo'.*'ssd'") as error:
            plugin_for("ssd")
        assert "\n" not in str(error.value)

    def test_a_family_cannot_be_registered_twice(self) -> None:
        """Registering a plug-in whose family is taken is refused and changes nothing."""
        before = families()
        with pytest.raises(ValueError, match="already registered: yolo"):
            register(plugin_for("yolo"))
        assert families() == before

    def test_yolo_config_carries_its_settings(self) -> None:
        """Layout, input size, classes, class names and thresholds come from [inference]."""
        cfg = _settings(
            "yolo",
            yolo_layout="v8",
            yolo_input_size=320,
            classes="0,2",
            class_names="person, bicycle ,car",
            score_threshold=0.4,
            nms_iou=0.5,
        )
        config = plugin_for("yolo").config_from(cfg)
        assert config == YoloConfig(
            layout="v8",
            input_size=320,
            classes=(0, 2),
            class_names=("person", "bicycle", "car"),
            score_threshold=0.4,
            nms_iou=0.5,
        )
        assert plugin_for("yolo").input_size_setting == "yolo_input_size"

    def test_yolo_config_defaults_keep_every_class_unnamed(self) -> None:
        """Empty classes and class_names keep every class and label it by id."""
        config = plugin_for("yolo").config_from(_settings("yolo"))
        assert (config.layout, config.classes, config.class_names) == ("v5", None, ())

    @pytest.mark.parametrize(("model", "size"), [("blazeface-full", 192), ("short_range", 128)])
    def test_blazeface_config_carries_its_settings(self, model: str, size: int) -> None:
        """The canonical family, thresholds and the graph's input size come from [inference]."""
        cfg = _settings(model, score_threshold=0.6, nms_iou=0.25)
        config = plugin_for(cfg.family).config_from(cfg)
        assert config == BlazeFaceConfig(cfg.family, 0.6, 0.25, size)
        assert plugin_for(cfg.family).model_file_hint is None
