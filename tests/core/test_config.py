"""Settings: defaults, TOML, environment overrides, and one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, validate_camera_name


def test_defaults_are_valid_and_env_round_trips() -> None:
    """``to_env`` of any settings reloads to the same settings (how children inherit them)."""
    settings = Settings().replace(nats={"url": "nats://127.0.0.1:5999"}, decoder={"replicas": 3})
    assert load_settings(env=settings.to_env()) == settings


def test_toml_then_env_precedence(tmp_path: Path) -> None:
    """Environment variables override the TOML file, which overrides defaults."""
    config = tmp_path / "fp.toml"
    config.write_text(
        '[inference]\nscore_threshold = 0.7\nmodel = "short_range"\n[decoder]\nfetch_batch = 2\n'
    )
    settings = load_settings(config, env={"FRAMEPIPE_DECODER__FETCH_BATCH": "3"})
    assert settings.inference.score_threshold == 0.7
    assert settings.inference.input_size == 128
    assert settings.decoder.fetch_batch == 3


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"FRAMEPIPE_DECODER__ACK_WAIT_S": "-1"}, "decoder.ack_wait_s"),
        ({"FRAMEPIPE_DECODER__ACK_WAIT_S": "soon"}, "decoder.ack_wait_s"),
        ({"FRAMEPIPE_INFERENCE__BACKEND": "tpu"}, "inference.backend"),
        ({"FRAMEPIPE_NATS__URL": "http://x"}, "nats.url"),
        ({"FRAMEPIPE_ENCODER__CRF": "99"}, "encoder.crf"),
        ({"FRAMEPIPE_ENCODER__FPS": "30"}, "encoder.fps"),
        ({"FRAMEPIPE_CAMERAS__X": "1"}, "[cameras]"),
        ({"FRAMEPIPE_SINK__FETCH_BATCH": "100"}, "sink.fetch_batch"),
        ({"FRAMEPIPE_GATEWAY__LIVE_PACKETS": "sometimes"}, "gateway.live_packets"),
    ],
)
def test_bad_settings_name_the_field(env: dict[str, str], field: str) -> None:
    """A bad value gives one line that names the offending field."""
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_names_are_consistent() -> None:
    """Subjects, dedupe ids and dlq subjects follow DESIGN.md's scheme."""
    assert Names.subject(Names.VIDEO, "cam1") == "video.cam1"
    assert Names.wildcard(Names.FRAMES) == "frames.>"
    assert Names.msg_id("cam1", 7, "decoder", 1) == "cam1:7:decoder:1"
    assert Names.dlq_subject("decoder") == "dlq.decoder"
    with pytest.raises(ConfigError):
        validate_camera_name("lobby.east")


def test_one_file_holds_stage_and_cluster_tables(tmp_path: Path) -> None:
    """``[k8s]`` and ``[scaling.*]`` sit in the same TOML as the stage settings: the stage
    loader skips them, the cluster loader reads them."""
    from framepipe.core.loader import load_cluster_config

    file = tmp_path / "framepipe.toml"
    file.write_text(
        '[decoder]\nthreads = 2\n[k8s]\nnamespace = "office"\n[scaling.inference]\nlag_threshold = 5\n'
    )
    assert load_settings(file, env={}).decoder.threads == 2
    assert load_cluster_config(file).scaling.inference.lag_threshold == 5
