"""Entry point: validate configuration and the store at start-up (one clear message on failure), run the
graph, then print the summary."""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions
from pydantic import ValidationError

from connectors.base import StoreConfigError
from connectors.qdrant import QdrantConfig
from connectors.sources import SourceConfigError
from pipeline.graph import ResolvedModel, build_graph
from pipeline.options import SyncConfig, parse_args
from transforms.onnx_int8 import UnsupportedModelError
from pipeline.summary import RunSummary, summary_from_metrics
from transforms.model import (
    ModelNotFoundError,
    embedding_dimension,
    force_offline,
    load_sentence_transformer,
    model_fingerprint,
    resolve_model,
)

log = logging.getLogger("beam_vector_sync")


class StartupError(RuntimeError):
    """Configuration that cannot work; reported as one line before any data is read."""


@functools.lru_cache(maxsize=4)
def resolve(model_arg: Optional[str], backend: str = "torch", onnx_cache: Optional[str] = None) -> ResolvedModel:
    """The model's local path, fingerprint and dimension (loaded once per process to read the dimension); for
    `onnx-int8`, the int8 export (made now from the local model if not cached)."""
    force_offline()
    path = resolve_model(model_arg)
    model = load_sentence_transformer(path, "cpu")
    resolved = ResolvedModel(path=path, model_id=model_fingerprint(path), dimension=embedding_dimension(model))
    if backend == "torch":
        return resolved
    from transforms.onnx_int8 import BACKEND, DEFAULT_CACHE, ensure_int8_model

    folder = ensure_int8_model(path, Path(onnx_cache) if onnx_cache else DEFAULT_CACHE)
    return ResolvedModel(path=path, model_id=f"{resolved.model_id}+{BACKEND}", dimension=resolved.dimension,
                         onnx_folder=str(folder))


def clear_dead_letters(path: str) -> None:
    """The dead-letter file holds this run's records only: remove last run's (local paths)."""
    if "://" not in path:
        Path(path).unlink(missing_ok=True)


def check_input(config: SyncConfig) -> None:
    """A streaming source must be reachable; a change-log input must exist: a folder, or a path or glob that
    matches at least one file (any Beam filesystem)."""
    if config.source is not None:
        try:
            config.source.check()
        except SourceConfigError as exc:
            raise StartupError(str(exc)) from exc
        return
    if config.input_is_folder:
        return
    from apache_beam.io.filesystems import FileSystems

    try:
        matched = FileSystems.match([config.input])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - an unreadable location is a start-up error
        raise StartupError(f"--input {config.input}: {exc}") from exc
    if not matched:
        raise StartupError(f"--input {config.input}: no file matches (give a JSONL file, a glob or a folder)")


LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner")


def check_runner(config: SyncConfig, options: PipelineOptions) -> None:
    direct = options.view_as(DirectOptions)
    embedded = any(isinstance(s, QdrantConfig) and s.path for s in config.stores)
    if embedded and direct.direct_running_mode == "multi_processing" and (direct.direct_num_workers or 1) != 1:
        raise StartupError("the embedded Qdrant store (--qdrant_path) allows one process; use one worker or "
                           "--qdrant_url with --direct_running_mode=multi_processing")
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").split(".")[-1]
    if config.source is not None and config.source.unbounded and runner in LOCAL_RUNNERS:
        raise StartupError(f"an unbounded source never finishes on {runner} (it runs in batch mode here): add "
                           "--kafka_stop_at_end for one bounded run, or --follow SECONDS for successive bounded "
                           "runs; unbounded reading is for streaming runners (Flink, Dataflow)")


def prepare_stores(config: SyncConfig, model: ResolvedModel) -> None:
    """Every sink is reachable and ready (collection/table/index present or created, dimension right); a
    sink that cannot be reached or made ready is a one-line `StartupError`."""
    for store_config in config.stores:
        try:
            store = store_config.create_store()
            try:
                store.ensure_ready(model.dimension)
            finally:
                store.close()
        except StoreConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store that cannot be made or reached is a start-up error
            raise StartupError(f"cannot use sink {store_config.sink_name}: {one_line(exc)}") from exc


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, at most `limit` characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def count_vectors(config: SyncConfig) -> dict[str, int]:
    """Chunk vectors in each store after the run."""
    counts = {}
    for store_config in config.stores:
        store = store_config.create_store()
        try:
            counts[store_config.sink_name] = store.count()
        finally:
            store.close()
    return counts


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
    """Runs one sync; raises `StartupError` for configuration that cannot work."""
    try:
        config, beam_args = parse_args(argv)
    except ValidationError as exc:
        raise StartupError(_messages(exc)) from exc
    except (ValueError, OSError) as exc:
        raise StartupError(str(exc)) from exc
    with contextlib.ExitStack() as scopes:
        for store_config in config.stores:
            scopes.enter_context(store_config.run_scope())
        return _run(config, beam_args)


def _messages(error: ValidationError) -> str:
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())


def _run(config: SyncConfig, beam_args: list[str]) -> RunSummary:
    try:
        model = resolve(config.model, config.backend, config.onnx_cache)
        options = PipelineOptions(beam_args)
        options.view_as(SetupOptions).save_main_session = False
        check_input(config)
        check_runner(config, options)
        prepare_stores(config, model)
    except (StoreConfigError, ModelNotFoundError, UnsupportedModelError) as exc:
        raise StartupError(str(exc)) from exc
    clear_dead_letters(config.dead_letters)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, config, model)
    result = pipeline.run()
    result.wait_until_finish()
    summary = summary_from_metrics(result, time.monotonic() - started, [s.sink_name for s in config.stores])
    summary = summary.with_store_counts(count_vectors(config))
    if config.summary_json:
        with open(config.summary_json, "w", encoding="utf-8") as fh:
            fh.write(summary.to_json())
    return summary


def split_follow(argv: Sequence[str]) -> tuple[Optional[float], list[str]]:
    """`--follow SECONDS` (continuous sync by successive bounded runs) and the arguments of each run."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", add_help=False, allow_abbrev=False)
    parser.add_argument("--follow", type=float, metavar="SECONDS")
    known, rest = parser.parse_known_args(argv)
    return known.follow, rest


def main(argv: Optional[Sequence[str]] = None) -> int:
    """One run; or, with `--follow SECONDS`, a run every SECONDS after the last one ended (each run reads what
    arrived since the last acknowledged position, e.g. Kafka runs read to the end offsets seen at start)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    pause, argv = split_follow(argv)
    if pause is not None and "--kafka_stop_at_end" not in argv:
        argv.append("--kafka_stop_at_end")  # ignored by the other sources
    while True:
        try:
            summary = run(argv)
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(summary.render(), flush=True)
        if pause is None:
            return 0
        time.sleep(pause)
