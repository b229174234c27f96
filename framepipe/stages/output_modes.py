"""Each camera's output mode, read at every GOP: ``[output] mode`` unless the camera has its
own in the ``FP_OUTPUT_MODES`` bucket (``framepipe cameras mode CAM MODE``).

The encoder asks once per GOP (one KV get on loopback, well under a millisecond next to a
GOP's remux or encode), so a change takes effect at the next GOP the encoder starts, on
every replica, with no restart and no cache to go stale.
"""

from __future__ import annotations

import contextlib

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framepipe.core.errors import ConfigError
from framepipe.core.settings import OUTPUT_MODES, Settings
from framepipe.core.topology import Names, validate_camera_name

log = structlog.get_logger("framepipe.output_modes")


def check_mode(mode: str) -> str:
    if mode not in OUTPUT_MODES:
        raise ConfigError(f"output mode must be one of {', '.join(OUTPUT_MODES)}, got {mode!r}")
    return mode


class OutputModes:
    """The default mode from settings, per-camera overrides from the bucket."""

    def __init__(self, settings: Settings) -> None:
        self.default = settings.output.mode
        self._kv: KeyValue | None = None
        self._warned: set[str] = set()

    async def setup(self, js: JetStreamContext) -> None:
        self._kv = await js.key_value(Names.OUTPUT_MODES_BUCKET)

    async def mode(self, camera: str) -> str:
        if self._kv is None:
            return self.default
        try:
            entry = await self._kv.get(camera)
        except KeyNotFoundError:
            return self.default
        value = (entry.value or b"").decode(errors="replace")
        if not value:
            return self.default
        if value not in OUTPUT_MODES:
            if camera not in self._warned:
                self._warned.add(camera)
                log.warning(
                    "output.bad_mode",
                    camera=camera,
                    mode=value[:40],
                    detail=f"using {self.default}: set one of {', '.join(OUTPUT_MODES)} "
                    f"with `framepipe cameras mode {camera} MODE`",
                )
            return self.default
        return value


async def set_mode(js: JetStreamContext, camera: str, mode: str | None) -> None:
    """Override ``camera``'s mode (None: back to ``[output] mode``)."""
    validate_camera_name(camera)
    kv = await js.key_value(Names.OUTPUT_MODES_BUCKET)
    if mode is None:
        # kv.delete of a missing key is no error in every nats-py version; suppress it anyway.
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(camera)
        return
    await kv.put(camera, check_mode(mode).encode())
