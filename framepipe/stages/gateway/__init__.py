"""Gateway: demux a camera/file with PyAV (no decode), publish one message per GOP.

- :mod:`.reader`: opening inputs, FFmpeg options, stream parameters, packets and
  the demux thread that cuts GOPs and reconnects live sources;
- :mod:`.pacing`: file sources played in real time;
- :mod:`.credentials`: FFmpeg error text with the URL's credentials removed
  (credentials come from the URL or ``FRAMEPIPE_SOURCE_USERNAME``/
  ``FRAMEPIPE_SOURCE_PASSWORD`` and are removed from everything stored or logged);
- :mod:`.gateway`: the :class:`Gateway` process that publishes GOPs, keeps the
  camera's source state and sends gap events.
"""

from __future__ import annotations

from framepipe.stages.gateway.gateway import Gateway, gop_message
from framepipe.stages.gateway.reader import (
    StreamParams,
    backoff_delay,
    input_options,
    iter_packets,
    open_input,
    stream_params,
)

__all__ = [
    "Gateway",
    "StreamParams",
    "backoff_delay",
    "gop_message",
    "input_options",
    "iter_packets",
    "open_input",
    "stream_params",
]
