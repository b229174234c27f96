"""One exception hierarchy for framepipe.

The runner decides what to do with a failed message from the class alone:
``RetryableError`` → ``nak`` with backoff, ``PoisonError`` → dead-letter stream
and ``term``. Anything else is treated as retryable until the delivery limit,
then as poison, so a bug can never loop a message forever.
"""

from __future__ import annotations

from typing import ClassVar


class FramepipeError(Exception):
    """Base class of every error framepipe raises on purpose."""

    #: the command line's exit status when this error ends a command.
    exit_code: ClassVar[int] = 1


class ConfigError(FramepipeError, ValueError):
    """A setting or argument is missing or invalid; the message names the field."""

    exit_code = 2


class SetupError(FramepipeError, RuntimeError):
    """The local environment is not ready (model not built, binary missing...)."""


class BusError(FramepipeError, ConnectionError):
    """Talking to NATS failed."""


class UnreachableError(BusError):
    """No system answers: nothing listens where NATS should be (nothing running, wrong URL)."""

    exit_code = 3


class RetryableError(FramepipeError):
    """Transient failure: the same input may succeed later."""


class PoisonError(FramepipeError):
    """The input itself is bad; retrying cannot help. Goes to the DLQ."""

    reason = "poison"


class SchemaError(PoisonError):
    """A message does not match its declared kind/version."""

    reason = "schema"


class UnknownVersionError(SchemaError):
    """A message carries an envelope version this build does not understand."""

    reason = "unknown-version"


class CorruptMediaError(PoisonError):
    """Encoded video that cannot be decoded (truncated, garbage, wrong codec)."""

    reason = "corrupt-media"


class MissingInputError(PoisonError):
    """An input references data that no longer exists (e.g. GOP aged out of VIDEO)."""

    reason = "missing-input"


class SourceError(FramepipeError, OSError):
    """A camera/file source cannot be opened or read."""
