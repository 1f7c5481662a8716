"""Progress of a long run on a terminal: one line on stderr, redrawn every second, with the records read
(of how many, where the input can tell), events applied, dead letters, chunks embedded and their rate, and
an estimate of the time left. Nothing is printed when stderr is not a terminal (cron, CI, logs), and the
line is cleared before the run's summary. It reads this process's live totals (transforms/counters.py), so
it shows in-process runs only."""
from __future__ import annotations

import glob
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

from transforms import counters

MAX_COUNTED_BYTES = 1 << 30
"""Input files are counted (newlines) for the estimate only up to this many bytes in all."""


def expected_records(input_pattern: str, is_folder: bool) -> Optional[int]:
    """How many records a local change-log (lines) or folder (files) input holds; None when it cannot be
    told cheaply (remote, or over `MAX_COUNTED_BYTES`)."""
    if "://" in input_pattern:
        return None
    if is_folder:
        return sum(len(files) for _, _, files in os.walk(input_pattern))
    paths = [Path(p) for p in glob.glob(input_pattern)]
    if sum(p.stat().st_size for p in paths if p.is_file()) > MAX_COUNTED_BYTES:
        return None
    total = 0
    for path in paths:
        with path.open("rb") as fh:
            last = b"\n"
            while block := fh.read(1 << 20):
                total += block.count(b"\n")
                last = block[-1:]
            total += last != b"\n"
    return total


def _figure(n: float) -> str:
    return f"{int(n):,}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(now: dict[str, int], start: dict[str, int], elapsed: float, expected: Optional[int]) -> str:
    """The line for counters `now` (live totals less those at `start`) after `elapsed` seconds."""
    def get(name: str) -> int:
        return now.get(name, 0) - start.get(name, 0)

    read, chunks = get(counters.RECORDS_READ), get(counters.CHUNKS_EMBEDDED)
    parts = [f"records {_figure(read)}" + (f"/{_figure(expected)}" if expected else ""),
             f"applied {_figure(get(counters.EVENTS_APPLIED))}",
             f"dead letters {_figure(get(counters.EVENTS_DEAD_LETTERED))}",
             f"chunks {_figure(chunks)} ({chunks / elapsed:.0f}/s)" if elapsed > 0 else f"chunks {_figure(chunks)}",
             _duration(elapsed)]
    done = get(counters.EVENTS_APPLIED) + get(counters.EVENTS_SUPERSEDED) + get(counters.EVENTS_DEAD_LETTERED)
    if expected and 0 < done < expected and elapsed > 5:
        parts.append(f"about {_duration(elapsed * (expected - done) / done)} left")
    return " · ".join(parts)


class Progress:
    """Redraws the progress line every `every_s` while the run goes on (a daemon thread); `stop()` clears it."""

    def __init__(self, expected: Optional[int] = None, enabled: bool = True, stream: Optional[TextIO] = None,
                 every_s: float = 1.0) -> None:
        stream = stream or sys.stderr
        self._expected, self._stream, self._every_s = expected, stream, every_s
        self._enabled = enabled and hasattr(stream, "isatty") and stream.isatty()
        self._start = self._snapshot()
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._width = 0
        self._thread: Optional[threading.Thread] = None
        if self._enabled:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    @staticmethod
    def _snapshot() -> dict[str, int]:
        return {name: value for (namespace, name), value in counters.live_totals()["counters"].items()
                if namespace == counters.NAMESPACE}

    def _loop(self) -> None:
        while not self._stopped.wait(self._every_s):
            self._draw()

    def _draw(self) -> None:
        line = progress_line(self._snapshot(), self._start, time.monotonic() - self._started, self._expected)
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
