"""`python -m bench.plot [--scale S] [--batch_sizes 16,32,64,128] [--paths raw,pipeline,onnx-raw] --out PNG`:
throughput (chunks/s) of each path at each embedding batch size, measured like `python -m bench` (one
process per path and size), drawn as a PNG and printed as a table."""
from __future__ import annotations

import argparse
import json
import sys
import shutil
import tempfile
from pathlib import Path

from bench.__main__ import BASE_DOCS, measure


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--batch_sizes", default="16,32,64,128")
    parser.add_argument("--paths", default="raw,pipeline,onnx-raw")
    parser.add_argument("--out", default="bench/throughput.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    docs = max(10, int(BASE_DOCS * args.scale))
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rates: dict[str, list[float]] = {}
    for path in args.paths.split(","):
        for size in sizes:
            work = Path(tempfile.mkdtemp(prefix="bench-plot-"))
            try:
                result = measure(path, docs, size, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            rates.setdefault(path, []).append(result["chunks"] / result["seconds"])
            print(f"{path:<14} batch {size:>4}: {rates[path][-1]:6.1f} chunks/s", flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for path, values in rates.items():
        axes.plot(sizes, values, marker="o", label=path)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [str(s) for s in sizes])
    axes.set_xlabel("embedding batch size (chunks)")
    axes.set_ylabel("chunks / s")
    axes.set_title(f"all-MiniLM-L6-v2 on this CPU, {docs} documents")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    if args.json:
        Path(args.json).write_text(json.dumps({"batch_sizes": sizes, "chunks_per_s": rates}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
