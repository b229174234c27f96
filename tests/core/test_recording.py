"""The sink's recording state on disk (core.recording): progress.json and the entries journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from framepipe.core.recording import (
    COMPACT_AFTER,
    ENTRIES_FILE,
    PROGRESS_FILE,
    EntriesJournal,
    read_progress,
    write_atomic,
)


def entry(gop: int) -> dict[str, Any]:
    return {"gop": gop, "uri": f"seg_{gop:06d}.ts", "duration": 1.0, "discontinuity": False}


def commit(state: Path, journal: EntriesJournal, entries: list[dict[str, Any]], next_gop: int) -> None:
    """What the sink's save does: append, commit progress.json, then compact."""
    journal.append(entries)
    progress = {"next_gop": next_gop, "entries_kept": len(entries)}
    write_atomic(state / PROGRESS_FILE, json.dumps(progress).encode())
    journal.compact(entries)


def journal_gops(state: Path) -> list[int]:
    return [json.loads(line)["gop"] for line in (state / ENTRIES_FILE).read_text().splitlines()]


class TestEntriesJournal:
    """The sink appends; progress.json is the commit point."""

    def test_entries_round_trip_and_progress_stays_small(self, tmp_path: Path) -> None:
        """Entries come back as saved; progress.json does not grow with them."""
        journal, entries = EntriesJournal(tmp_path), []
        sizes = []
        for gop in range(2000):
            entries.append(entry(gop))
            commit(tmp_path, journal, entries, gop + 1)
            sizes.append((tmp_path / PROGRESS_FILE).stat().st_size)
        assert read_progress(tmp_path)["entries"] == entries
        assert EntriesJournal(tmp_path).load(json.loads((tmp_path / PROGRESS_FILE).read_text())) == entries
        assert sizes[-1] - sizes[9] == 4  # next_gop and entries_kept: 10 -> 2000, two digits more each
        assert len(journal_gops(tmp_path)) == 2000  # appended once each, never rewritten

    def test_an_uncommitted_line_is_dropped_and_the_replay_counts_once(self, tmp_path: Path) -> None:
        """A sink that died between the journal's append and progress.json: the GOP is replayed once."""
        journal, entries = EntriesJournal(tmp_path), [entry(0), entry(1)]
        commit(tmp_path, journal, entries, 2)
        journal.append([*entries, entry(2)])  # ... and the process dies here
        progress = json.loads((tmp_path / PROGRESS_FILE).read_text())
        assert read_progress(tmp_path)["entries"] == entries
        again = EntriesJournal(tmp_path)
        loaded = again.load(progress)
        assert loaded == entries
        assert journal_gops(tmp_path) == [0, 1]  # rewritten without it
        commit(tmp_path, again, [*loaded, entry(2)], 3)  # the replay
        assert journal_gops(tmp_path) == [0, 1, 2]

    def test_a_torn_last_line_is_skipped_and_rewritten(self, tmp_path: Path) -> None:
        """Half a line (a crash mid-append) neither breaks the load nor joins the next line."""
        journal, entries = EntriesJournal(tmp_path), [entry(0)]
        commit(tmp_path, journal, entries, 1)
        with open(tmp_path / ENTRIES_FILE, "a") as handle:
            handle.write('{"gop": 1, "uri": "seg_0')
        again = EntriesJournal(tmp_path)
        assert again.load(json.loads((tmp_path / PROGRESS_FILE).read_text())) == entries
        commit(tmp_path, again, [*entries, entry(1)], 2)
        assert journal_gops(tmp_path) == [0, 1]

    def test_retention_keeps_the_newest_and_compacts_after_the_commit(self, tmp_path: Path) -> None:
        """Dropped head entries stay in the file (unnamed) until they outnumber the kept ones."""
        journal, entries = EntriesJournal(tmp_path), []
        keep = 10
        for gop in range(COMPACT_AFTER + keep + 5):
            entries.append(entry(gop))
            del entries[:-keep]  # retention: the newest `keep` stay
            commit(tmp_path, journal, entries, gop + 1)
            assert read_progress(tmp_path)["entries"] == entries
        lines = journal_gops(tmp_path)
        assert len(lines) <= COMPACT_AFTER + keep + 1  # compacted once on the way
        assert lines[-keep:] == [e["gop"] for e in entries]

    def test_an_inline_list_is_read_and_moved_to_the_journal(self, tmp_path: Path) -> None:
        """A progress.json from before the journal lists its entries itself."""
        entries = [entry(0), entry(2)]
        old = {"next_gop": 3, "entries": entries, "ended": True}
        (tmp_path / PROGRESS_FILE).write_text(json.dumps(old))
        assert read_progress(tmp_path)["entries"] == entries
        journal = EntriesJournal(tmp_path)
        progress = json.loads((tmp_path / PROGRESS_FILE).read_text())
        assert journal.load(progress) == entries
        assert "entries" not in progress
        assert journal_gops(tmp_path) == [0, 2]

    def test_no_progress_reads_as_missing(self, tmp_path: Path) -> None:
        """read_progress raises FileNotFoundError (an OSError) before the first segment."""
        with pytest.raises(FileNotFoundError):
            read_progress(tmp_path)
