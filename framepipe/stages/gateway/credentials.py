"""FFmpeg error text without credentials.

FFmpeg appends the URL it failed on to its messages, and that URL may hold a
user and password (from the source or from ``FRAMEPIPE_SOURCE_USERNAME`` /
``FRAMEPIPE_SOURCE_PASSWORD`` via :func:`~framepipe.core.sources.with_credentials`).
Every error the gateway raises, stores or logs goes through here first.
"""

from __future__ import annotations

from framepipe.core.sources import redact


def ffmpeg_error_text(exc: BaseException, source: str, timeout_s: float | None = None) -> str:
    """FFmpeg's reason without the URL it appends (that one may hold credentials)."""
    reason = str(getattr(exc, "strerror", None) or exc)
    if "Immediate exit requested" in reason:  # AVERROR_EXIT: PyAV's timeout interrupted the I/O
        reason = f"timed out (no data for {timeout_s:g}s)" if timeout_s else "timed out"
    return scrub(reason, source)


def scrub(text: str, source: str) -> str:
    """An FFmpeg error message on one line, without the URL's credentials."""
    text = text.replace(source, redact(source))
    return " ".join(redact(text).split())
