"""`python -m pipeline.replay DEAD_LETTERS... [--stage STAGE] [--output FILE]`: turn dead letters back into
change-log lines (their original payloads), to fix and feed to `python -m pipeline --input FILE`.

DEAD_LETTERS are files, folders or globs on any Beam filesystem: the dead-letter file that runs append to,
and the `<path>-<id>.jsonl` objects written beside a remote path, are all read.

Only payloads that were change-log records (a JSON line) are written; others (folder files, whose payload
is a whole document) are listed on stderr with their source so they can be re-sent from there."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, TextIO, Union

from transforms.types import DeadLetter


def dead_letter_files(location: str) -> list[str]:
    """The dead-letter files at `location`: a file, a folder (its `*.jsonl`), or a glob; with the
    `<stem>-<id>.jsonl` objects written beside a remote path."""
    from apache_beam.io.filesystems import FileSystems

    if os.path.isdir(location):
        patterns = [os.path.join(location, "*.jsonl")]
    else:
        stem = location[:-len(".jsonl")] if location.endswith(".jsonl") else location
        patterns = [location, f"{stem}-*.jsonl"]
    found: set[str] = set()
    for pattern in patterns:
        try:
            found.update(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        except Exception:  # noqa: BLE001 - a pattern that matches nothing
            continue
    return sorted(found)


def read_dead_letters(location: Union[str, Path]) -> Iterator[DeadLetter]:
    from apache_beam.io.filesystems import FileSystems

    for name in dead_letter_files(str(location)):
        with FileSystems.open(name) as fh:
            for line in fh:
                if line.strip():
                    yield DeadLetter.model_validate_json(line)


def replay(letters: Iterator[DeadLetter], out: TextIO, err: TextIO, stage: Optional[str] = None) -> int:
    """Writes each replayable payload as one line; returns how many were written."""
    written = 0
    for letter in letters:
        if stage and not letter.stage.startswith(stage):
            continue
        payload = letter.original_payload()
        if letter.source is not None and letter.source.system != "changelog":
            print(f"not a change-log record, re-send from its source: {letter.source.describe()}", file=err)
            continue
        out.write(payload.decode("utf-8", errors="replace") + "\n")
        written += 1
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.replay", description=__doc__)
    parser.add_argument("dead_letters", nargs="+", help="dead-letter files, folders or globs")
    parser.add_argument("--stage", default=None, help="only this stage (prefix match, e.g. 'sink')")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        letters = (letter for location in args.dead_letters for letter in read_dead_letters(location))
        count = replay(letters, out, sys.stderr, args.stage)
    finally:
        if args.output:
            out.close()
    print(f"{count} record(s) ready to replay", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
