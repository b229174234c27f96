"""Every setting a framepipe process reads, as frozen dataclasses.

Stage code, the local supervisor, the CLI and the Kubernetes rendering all read
tunables from :class:`Settings` (names live in :mod:`framepipe.core.topology`),
so a setting cannot differ between a laptop and a cluster. What only the
cluster reads is in :mod:`framepipe.core.cluster_settings`; both load through
the one reader and coercion engine of :mod:`framepipe.core.loader`: defaults,
a TOML file (``--config`` or ``FRAMEPIPE_CONFIG``), then environment variables
named ``FRAMEPIPE_<SECTION>__<FIELD>`` (e.g. ``FRAMEPIPE_NATS__URL``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from framepipe.core.errors import ConfigError
from framepipe.core.settings.bus import ConsumerSettings, NatsSettings, StreamSettings, positive
from framepipe.core.settings.runtime import LocalSettings, WebRtcSettings, WebSettings
from framepipe.core.settings.stages import (
    OUTPUT_MODES,
    AnalysisSettings,
    DecoderSettings,
    EncoderSettings,
    GatewaySettings,
    InferenceSettings,
    OutputSettings,
    SinkSettings,
)
from framepipe.core.settings.thermal import ThermalSettings

ENV_PREFIX = "FRAMEPIPE_"
#: tables of the same TOML file that only the cluster manifests and the autoscaler read.
CLUSTER_SECTIONS = ("k8s", "scaling", "cameras")  # cameras: settings/cameras.py

__all__ = [
    "CLUSTER_SECTIONS",
    "ENV_PREFIX",
    "OUTPUT_MODES",
    "AnalysisSettings",
    "ConfigError",
    "ConsumerSettings",
    "DecoderSettings",
    "EncoderSettings",
    "GatewaySettings",
    "InferenceSettings",
    "LocalSettings",
    "NatsSettings",
    "OutputSettings",
    "Settings",
    "SinkSettings",
    "StreamSettings",
    "ThermalSettings",
    "WebRtcSettings",
    "WebSettings",
    "positive",
]


@dataclass(frozen=True)
class Settings:
    nats: NatsSettings = field(default_factory=NatsSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    web: WebSettings = field(default_factory=WebSettings)
    webrtc: WebRtcSettings = field(default_factory=WebRtcSettings)
    thermal: ThermalSettings = field(default_factory=ThermalSettings)

    def consumer(self, stage: str) -> ConsumerSettings:
        section = getattr(self, stage, None)
        if not isinstance(section, ConsumerSettings):
            raise ConfigError(f"no stage named {stage!r}")
        return section

    def replace(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some fields changed, e.g. ``replace(nats={"url": ...})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def to_env(self) -> dict[str, str]:
        """Environment that reproduces these settings in a child process."""
        env: dict[str, str] = {}
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            for item in dataclasses.fields(value):
                key = f"{ENV_PREFIX}{section.name.upper()}__{item.name.upper()}"
                env[key] = str(getattr(value, item.name))
        return env
