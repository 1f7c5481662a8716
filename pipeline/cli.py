"""The command line (`python -m pipeline`, the `beam-vector-sync` script): the flags are checked before Beam,
the model libraries or any store client is imported, so `--help` and a usage error answer at once; only a
command line that can run goes on to `pipeline.main.main`."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from pipeline.flags import command_line_error


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`--help` (exit 0), a malformed flag (argparse's usage error, exit 2) and a mistyped flag (one line,
    exit 2) end here; anything else runs `pipeline.main.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    error = command_line_error(argv)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from pipeline.main import main as run_main  # imports Beam: seconds

    return run_main(argv)
