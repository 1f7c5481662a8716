"""`python -m bench.fixed_costs [--code DIR,DIR] [--cases ...] [--repeat N]`: what a whole `python -m pipeline`
process costs, wall time beside the time the pipeline itself reports (`wall_seconds`: graph built, run,
drained), for the cases a cron job or a `--follow` loop meets most:

- `help`: `--help`; `usage-error`: a malformed flag (`--batch_size many`, exit 2);
- `sample-first`: the shipped sample into a fresh embedded store with empty caches (fingerprints, model
  facts, Beam's option names): the first run on a machine;
- `sample-fresh`: the sample into a fresh store (caches warm); `sample-sync`: the same again, all in sync
  (the store is filled first, untimed, when no case before it did);
- `full`: the bench corpus (`bench.corpus`, `--docs` documents) into a fresh store; `resync`: the same
  documents at version 2 with 5% of them edited, against that store.

Each case runs in its own process with `PYTHONPATH` set to each `--code` folder in turn (so a baseline
checkout and this one are measured side by side, interleaved round by round); figures are medians over
`--repeat` rounds, with the range. Peak RSS is the process's own (`os.wait4`)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.corpus import changed_corpus, make_corpus, write_changelog

CASES = ("help", "usage-error", "sample-first", "sample-fresh", "sample-sync", "full", "resync")
ROOT = Path(__file__).resolve().parent.parent


def _process(code: Path, args: list[str], work: Path, cache: Path, runs: bool = True) -> dict:
    """One `python -m pipeline ARGS` process (`runs`: a sync, with a summary): wall seconds, exit code, peak
    RSS (MiB), and the summary's time, chunks embedded, events in sync and model loads."""
    summary = work / "summary.json"
    summary.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pipeline", *args,
            *(["--summary_json", str(summary), "--dead_letters", str(work / "dead.jsonl")] if runs else [])]
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VECTOR_SYNC_FINGERPRINT_CACHE": str(cache / "fingerprints.json")}
    with (work / "stderr.txt").open("w+b") as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    result = {"seconds": seconds, "rc": os.waitstatus_to_exitcode(status), "peak_rss_mib": usage.ru_maxrss / 1024}
    if runs and summary.exists():
        run = json.loads(summary.read_text())
        result.update(pipeline_seconds=run["wall_seconds"], chunks_embedded=run["chunks_embedded"],
                      events_in_sync=run["events_in_sync"], model_loads=run.get("model_loads"))
    elif runs:
        raise SystemExit(f"{' '.join(args)} with PYTHONPATH={code} failed:\n{stderr[-3000:]}")
    return result


def _case(name: str, code: Path, work: Path, cache: Path, docs: int) -> dict:
    store = ["--qdrant_path", str(work / "store")]
    if name == "help":
        return _process(code, ["--help"], work, cache, runs=False)
    if name == "usage-error":
        return _process(code, ["--batch_size", "many"], work, cache, runs=False)
    if name in ("sample-first", "sample-fresh"):
        shutil.rmtree(work / "store", ignore_errors=True)
        if name == "sample-first":
            shutil.rmtree(cache, ignore_errors=True)
        return _process(code, store, work, cache)
    if name == "sample-sync":
        if not (work / "store").exists():  # filled first, untimed
            _process(code, store, work, cache)
        return _process(code, store, work, cache)
    corpus = make_corpus(docs)
    if name == "full":
        shutil.rmtree(work / "corpus-store", ignore_errors=True)
        log = write_changelog(work / "corpus-v1.jsonl", corpus, 1)
    else:
        log = write_changelog(work / "corpus-v2.jsonl", changed_corpus(corpus, 0.05)[0], 2)
    return _process(code, ["--input", str(log), "--qdrant_path", str(work / "corpus-store")], work, cache)


def _median(runs: list[dict], key: str) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median_low(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fixed_costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=str(ROOT),
                        help="comma-separated checkouts to measure side by side (default: this one)")
    parser.add_argument("--cases", default="help,usage-error,sample-first,sample-fresh,sample-sync")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--docs", type=int, default=1500, help="bench corpus size for full and resync")
    parser.add_argument("--json", default=None, help="also write every round here")
    args = parser.parse_args()
    codes = [Path(c).resolve() for c in args.code.split(",")]
    cases = args.cases.split(",")
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    if "resync" in cases and ("full" not in cases or cases.index("full") > cases.index("resync")):
        parser.error("resync runs against the store full leaves: list full before it")
    rounds: dict[tuple[str, str], list[dict]] = {}
    works = {code: Path(tempfile.mkdtemp(prefix="fixed-costs-")) for code in codes}
    try:
        for _ in range(max(1, args.repeat)):
            for case in cases:  # interleaved: each case of each checkout, then the next round
                for code in codes:
                    work = works[code]
                    rounds.setdefault((case, str(code)), []).append(
                        _case(case, code, work, work / "cache", args.docs))
    finally:
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, {args.repeat} round(s)")
    print(f"{'case':<14}{'code':<28}{'whole s':>9}{'range':>14}{'pipeline s':>12}{'embedded':>10}"
          f"{'model loads':>13}{'peak MiB':>10}")
    for (case, code), runs in rounds.items():
        whole = [r["seconds"] for r in runs]
        inside = _median(runs, "pipeline_seconds")
        loads = _median(runs, "model_loads")
        print(f"{case:<14}{Path(code).name[:27]:<28}{statistics.median_low(whole):>9.2f}"
              f"{f'{min(whole):.2f}-{max(whole):.2f}':>14}{'-' if inside is None else f'{inside:.2f}':>12}"
              f"{_median(runs, 'chunks_embedded') if inside is not None else '-':>10}"
              f"{'-' if loads is None else loads:>13}{_median(runs, 'peak_rss_mib'):>10.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{c}|{k}": v for (c, k), v in rounds.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
