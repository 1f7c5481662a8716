"""`python -m pipeline.replay DEAD_LETTERS [--stage STAGE] [--output FILE]`: turn dead letters back into
change-log lines (their original payloads), to fix and feed to `python -m pipeline --input FILE`.

Only payloads that were change-log records (a JSON line) are written; others (folder files, whose payload
is a whole document) are listed on stderr with their source so they can be re-sent from there."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, TextIO

from transforms.types import DeadLetter


def read_dead_letters(path: Path) -> Iterator[DeadLetter]:
    with path.open(encoding="utf-8") as fh:
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
    parser.add_argument("dead_letters", type=Path)
    parser.add_argument("--stage", default=None, help="only this stage (prefix match, e.g. 'sink')")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        count = replay(read_dead_letters(args.dead_letters), out, sys.stderr, args.stage)
    finally:
        if args.output:
            out.close()
    print(f"{count} record(s) ready to replay", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
