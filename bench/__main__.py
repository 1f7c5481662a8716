"""`python -m bench [--scale S] [--batch_size B] [--paths ...]`: raw encode vs the pipeline vs Beam's
MLTransform, a 5%-changed re-sync vs a full re-embed, and the int8 ONNX backend (raw and in the pipeline,
with its fidelity to fp32), on one deterministic corpus. Each path runs in its own process."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DOCS = 1500


def measure(path: str, docs: int, batch_size: int, work: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.paths", path, "--docs", str(docs), "--batch_size",
                           str(batch_size), "--work", str(work)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        raise SystemExit(f"bench path {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help=f"corpus size as a multiple of {BASE_DOCS} docs")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--paths", default="raw,pipeline,resync,mltransform,onnx-raw,pipeline-onnx")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    docs = max(10, int(BASE_DOCS * args.scale))
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    results = {p: measure(p, docs, args.batch_size, work) for p in args.paths.split(",")}
    raw = results.get("raw")
    full = results.get("pipeline")
    print(f"corpus: {docs} documents, batch size {args.batch_size}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'path':<12}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}{'tokens/s':>10}{'vs raw':>8}{'peak MiB':>10}")
    for name, r in results.items():
        rate = r["chunks"] / r["seconds"] if r["seconds"] else 0
        tok = r["tokens"] / r["seconds"] if r["seconds"] else 0
        ratio = f"{rate / (raw['chunks'] / raw['seconds']):.2f}x" if raw and name != "resync" else "-"
        print(f"{name:<12}{r['chunks']:>8}{r['seconds']:>9.1f}{rate:>10.1f}{tok:>10.0f}{ratio:>8}{r['peak_rss_mib']:>10.0f}")
    if full and "padding_fraction" in full:
        print(f"pipeline padding: {full['padding_fraction']:.1%} of batch token slots")
    if full and "resync" in results:
        rs = results["resync"]
        print(f"re-sync, 5% of documents changed: {rs['seconds']:.1f} s ({rs['chunks']} chunks embedded, "
              f"{rs['chunks_skipped']} skipped) vs full embed {full['seconds']:.1f} s: "
              f"{full['seconds'] / rs['seconds']:.1f}x faster")
    if "onnx-raw" in results:
        o = results["onnx-raw"]
        print(f"onnx-int8 fidelity: mean cosine to fp32 {o['mean_cosine_to_fp32']}, "
              f"min {o['min_cosine_to_fp32']} (first 512 chunks)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
