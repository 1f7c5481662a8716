"""`python -m bench [--scale S] [--batch_size B] [--paths ...] [--model bundled|tiny|DIR]`: raw encode vs the pipeline vs Beam's
MLTransform, a 5%-changed re-sync vs a full re-embed, and the int8 ONNX backend (raw and in the pipeline,
with its fidelity to fp32), on one deterministic corpus. Each path runs in its own process; with
`--repeat N` the paths run N rounds, interleaved (raw, pipeline, ..., raw, pipeline, ...), each round in a fresh
work folder, and every figure is the median round (the range is printed beside it)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DOCS = 1500


def measure(path: str, docs: int, batch_size: int, work: Path, model: str = "bundled") -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.paths", path, "--docs", str(docs), "--batch_size",
                           str(batch_size), "--work", str(work), "--model", model], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        raise SystemExit(f"bench path {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_round(rounds: list[dict]) -> dict:
    """The round with the median time (the lower middle one for an even count), with every round's seconds."""
    ordered = sorted(rounds, key=lambda r: r["seconds"])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle["seconds_all"] = [round(r["seconds"], 2) for r in rounds]
    return middle


def spread(result: dict) -> str:
    times = result["seconds_all"]
    return f"  ({min(times):.1f}-{max(times):.1f} s over {len(times)})" if len(times) > 1 else ""


def print_round_ratios(rounds: dict[str, list[dict]]) -> None:
    """Ratios within each round (paths of one round ran back to back, so they share the machine's state)."""
    def rate(r: dict) -> float:
        return r["chunks"] / r["seconds"]

    for name, runs in rounds.items():
        if name in ("raw", "resync") or "raw" not in rounds:
            continue
        ratios = sorted(rate(r) / rate(raw) for r, raw in zip(runs, rounds["raw"]))
        print(f"{name} / raw, per round: {', '.join(f'{x:.2f}' for x in ratios)} "
              f"(median {ratios[(len(ratios) - 1) // 2]:.2f}x)")
    if "resync" in rounds and "pipeline" in rounds:
        speedups = sorted(full["seconds"] / rs["seconds"] for full, rs in zip(rounds["pipeline"], rounds["resync"]))
        print(f"re-sync speed-up, per round: {', '.join(f'{x:.1f}' for x in speedups)} "
              f"(median {speedups[(len(speedups) - 1) // 2]:.1f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help=f"corpus size as a multiple of {BASE_DOCS} docs")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--paths", default="raw,pipeline,resync,mltransform,onnx-raw,pipeline-onnx")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every path, interleaved (median reported)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--model", default="bundled", help="'bundled' all-MiniLM-L6-v2, 'tiny' (a near-free "
                        "1-layer model built offline by bench/tiny_model.py: shows the pipeline's own cost) or a folder")
    args = parser.parse_args()
    docs = max(10, int(BASE_DOCS * args.scale))
    paths = args.paths.split(",")
    rounds: dict[str, list[dict]] = {p: [] for p in paths}
    for _ in range(max(1, args.repeat)):
        work = Path(tempfile.mkdtemp(prefix="bench-"))
        try:
            for p in paths:
                rounds[p].append(measure(p, docs, args.batch_size, work, args.model))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    results = {p: median_round(r) for p, r in rounds.items()}
    raw = results.get("raw")
    full = results.get("pipeline")
    print(f"corpus: {docs} documents, model {args.model}, batch size {args.batch_size}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'path':<14}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}{'tokens/s':>10}{'vs raw':>8}{'peak MiB':>10}")
    for name, r in results.items():
        rate = r["chunks"] / r["seconds"] if r["seconds"] else 0
        tok = r["tokens"] / r["seconds"] if r["seconds"] else 0
        ratio = f"{rate / (raw['chunks'] / raw['seconds']):.2f}x" if raw and name != "resync" else "-"
        print(f"{name:<14}{r['chunks']:>8}{r['seconds']:>9.1f}{rate:>10.1f}{tok:>10.0f}{ratio:>8}"
              f"{r['peak_rss_mib']:>10.0f}{spread(r)}")
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
    if args.repeat > 1:
        print_round_ratios(rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
