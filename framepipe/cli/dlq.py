"""``framepipe dlq list|show|replay|purge``: inspect and re-drive dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from nats.js import JetStreamContext
from rich.console import Console

from framepipe.cli.errors import Typer
from framepipe.core import bus, dlq
from framepipe.core.loader import load_settings
from framepipe.local.runtime import attach_to_running

app = Typer(help="Inspect, replay and purge dead letters (the DLQ stream).", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (or FRAMEPIPE_CONFIG).")
]
StageOption = Annotated[str | None, typer.Option("--stage", help="Only this stage's dead letters.")]


def _with_js(config: Path | None, fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    async def go() -> T:
        settings, _ = attach_to_running(load_settings(config))
        nc = await bus.connect(settings, "framepipe-dlq", retry_initial=False)
        try:
            return await fn(nc.jetstream(timeout=10.0))
        finally:
            await nc.close()

    return asyncio.run(go())


@app.command("list")
def list_cmd(
    stage: StageOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """List dead letters, oldest first."""
    letters = _with_js(config, lambda js: dlq.list_letters(js, stage))
    for letter in letters:
        s = letter.summary()
        if as_json:
            print(json.dumps(s))
        else:
            print(
                f"{s['seq']:>6}  {s['stage']:<10} {s['reason']:<18} {s['camera']}:{s['gop']}  "
                f"{s['bytes']}B  {str(s['error'])[:80]}"
            )
    if not as_json:
        console.print(f"{len(letters)} dead letter(s)")


@app.command("show")
def show_cmd(
    seq: Annotated[
        int, typer.Argument(help="The letter's sequence number (the `seq` column of `dlq list`).")
    ],
    config: ConfigOption = None,
) -> None:
    """Print one dead letter's headers (and its size) as JSON."""
    letter = _with_js(config, lambda js: dlq.get_letter(js, seq))
    if letter is None:
        console.print(f"[bold red]error:[/] no dead letter with sequence {seq}")
        raise typer.Exit(1)
    print(
        json.dumps(
            {
                "seq": letter.seq,
                "subject": letter.subject,
                "bytes": len(letter.data),
                "headers": letter.headers,
            },
            indent=2,
        )
    )


@app.command("replay")
def replay_cmd(
    seqs: Annotated[list[int] | None, typer.Argument(help="Sequences to replay.")] = None,
    stage: StageOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (of --stage).")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the dead letters after replay.")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-publish dead letters to their original subjects (after fixing the cause)."""
    if not seqs and not all_:
        console.print("[bold red]error:[/] give sequences or --all")
        raise typer.Exit(2)

    async def go(js: JetStreamContext) -> int:
        if all_:
            letters = await dlq.list_letters(js, stage)
        else:
            found = [await dlq.get_letter(js, s) for s in seqs or []]
            letters = [x for x in found if x is not None]
        for letter in letters:
            subject = await dlq.replay(js, letter, delete=not keep)
            print(f"{letter.seq} -> {subject}")
        return len(letters)

    n = _with_js(config, go)
    console.print(f"replayed {n} dead letter(s)")


@app.command("purge")
def purge_cmd(
    stage: StageOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete dead letters (all, or one stage's)."""
    if not yes:
        typer.confirm(f"delete the dead letters of {stage or 'every stage'}?", abort=True)
    n = _with_js(config, lambda js: dlq.purge(js, stage))
    console.print(f"purged {n} dead letter(s)")
