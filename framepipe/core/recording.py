"""A camera's recording state as the sink keeps it in ``<output>/<camera>/.state/``.

``progress.json`` holds how far the recording got (``next_gop``, the byte lengths of
detections.jsonl and events.jsonl, the tracks, the events outbox, retention's sequence
numbers). The playlist's entries, one per segment, are kept beside it in
``entries.jsonl``, one JSON line each, appended as the sink appends GOPs: a camera that
records for a day has 86,400 of them, and rewriting them all into ``progress.json`` at
every GOP cost the sink 10 CPU ms per GOP after an hour and 215 ms after a day
(``bench.sink_growth``).

``progress.json`` stays the commit point. It names how many entries are kept
(``entries_kept``): the newest that many lines of the journal whose GOP is below its
``next_gop``. So a line appended by a sink that died before saving its progress, or lines
of entries retention has dropped, are read as not there; the sink rewrites the journal
without them when it loads it, and compacts it once it holds more dropped lines than kept
ones. A ``progress.json`` written before the journal existed lists its entries itself;
both readers take it as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
ENTRIES_FILE = "entries.jsonl"
#: the journal is compacted once it holds this many more dropped lines than kept ones.
COMPACT_AFTER = 1024


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``path`` so that a reader (or a restart) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _journal_lines(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The journal's entries, and whether its last line is torn (no newline: a crash
    mid-append, which the next append would join). A torn line, or one that is not an
    entry, is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], False
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("gop"), int):
            found.append(entry)
    return found, bool(text) and not text.endswith("\n")


def kept_entries(progress: dict[str, Any], journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries ``progress`` commits to, from the journal's lines (see the module's text)."""
    next_gop = progress.get("next_gop")
    kept = progress.get("entries_kept", 0)
    if not isinstance(next_gop, int) or not isinstance(kept, int) or kept <= 0:
        return []
    by_gop = {e["gop"]: e for e in journal if e["gop"] < next_gop}  # a replayed GOP: its last line
    return [by_gop[gop] for gop in sorted(by_gop)][-kept:]


def read_progress(state_dir: Path) -> dict[str, Any]:
    """``progress.json`` with its ``entries`` list filled in, for readers of a recording.

    Raises ``OSError`` when there is none and ``ValueError`` when it is not JSON.
    """
    progress = json.loads((state_dir / PROGRESS_FILE).read_text())
    if not isinstance(progress, dict):
        raise ValueError(f"{state_dir / PROGRESS_FILE} is not a JSON object")
    if not isinstance(progress.get("entries"), list):  # a journal, not an inline list
        progress["entries"] = kept_entries(progress, _journal_lines(state_dir / ENTRIES_FILE)[0])
    return progress


class EntriesJournal:
    """The sink's side of ``entries.jsonl``: load once, then append at each save."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / ENTRIES_FILE
        self._lines = 0  # lines in the file
        self._last_gop = -1  # the newest entry in the file

    def load(self, progress: dict[str, Any]) -> list[dict[str, Any]]:
        """The committed entries; the journal is rewritten to hold just them if it held more."""
        inline = progress.pop("entries", None)
        journal, torn = _journal_lines(self.path)
        entries = inline if isinstance(inline, list) else kept_entries(progress, journal)
        if isinstance(inline, list) or len(journal) != len(entries) or torn:
            self.rewrite(entries)
        else:
            self._lines = len(journal)
            self._last_gop = entries[-1]["gop"] if entries else -1
        return entries

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append the entries newer than the file's: before ``progress.json`` names them."""
        start = len(entries)
        while start > 0 and entries[start - 1]["gop"] > self._last_gop:
            start -= 1
        new = entries[start:]
        if new:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(e) + "\n" for e in new))
            self._lines += len(new)
            self._last_gop = new[-1]["gop"]

    def compact(self, entries: list[dict[str, Any]]) -> None:
        """Drop the lines retention has dropped, once they outnumber the kept ones. Only after
        ``progress.json`` committed ``entries``: the file then never lacks an entry it names."""
        if self._lines - len(entries) > max(COMPACT_AFTER, len(entries)):
            self.rewrite(entries)

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        """The journal as just ``entries``; the lines dropped are only ever ones no progress names."""
        write_atomic(self.path, "".join(json.dumps(e) + "\n" for e in entries).encode())
        self._lines = len(entries)
        self._last_gop = entries[-1]["gop"] if entries else -1
