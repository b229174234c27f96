"""How ``--help`` shows options: a flag has no value, so no ``<bool>`` type column.

Typer's rich help prints a type for every option, flags included (``--once <bool>``),
which reads as if the flag took a value. :mod:`framepipe.cli.app` calls :func:`install`.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _no_type_for_flags(self: TyperOption, ctx: Any) -> Any:  # ctx: Typer's (vendored) click Context
    if self.is_flag and self.metavar is None:
        return None
    return _display_type_rich(self, ctx)


def install() -> None:
    """Flags show no type in ``--help`` (options with a value keep theirs)."""
    TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]
