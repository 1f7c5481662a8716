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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)
from pydantic import ValidationError

from connectors.base import StoreConfigError
from connectors.qdrant import QdrantConfig
from connectors.secrets import literal_secrets
from connectors.sources import SourceConfigError
from pipeline.graph import build_graph
from pipeline.options import SyncConfig, parse_args
from transforms.onnx_int8 import UnsupportedModelError
from pipeline.progress import Progress, expected_records
from pipeline.summary import RunSummary, summary_from_metrics
from transforms.model import (
    ModelNotFoundError,
    ModelRef,
    force_offline,
    is_remote,
    model_facts,
    model_fingerprint,
    resolve_model,
)

if TYPE_CHECKING:
    from connectors.metrics_http import MetricsEndpoint

log = logging.getLogger("beam_vector_sync")


class StartupError(RuntimeError):
    """Configuration that cannot work; reported as one line before any data is read."""


@functools.lru_cache(maxsize=4)
def resolve(model_arg: Optional[str], backend: str = "torch", onnx_cache: Optional[str] = None) -> ModelRef:
    """The model reference the workers get: `model_arg` (a local folder made absolute), its fingerprint, its
    dimension and whether its tokenizer.json loads alone, from the launcher's copy (`model_facts`: the model
    is loaded here only the first time it is seen; the workers load it when the first chunk to embed comes).
    The int8 ONNX export is made where it is used: on the workers (and here for local runners, see `_run`)."""
    force_offline()
    path = resolve_model(model_arg)
    fingerprint = model_fingerprint(path)
    facts = model_facts(path, fingerprint)
    reference = model_arg
    if model_arg and not is_remote(model_arg) and Path(model_arg.removeprefix("file://")).expanduser().exists():
        reference = path  # absolute: the same folder must exist on every worker
    return ModelRef(reference=reference, fingerprint=fingerprint, dimension=facts.dimension,
                    backend=backend, onnx_cache=onnx_cache, tokenizer_file=facts.tokenizer_file)


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


def runner_name(options: PipelineOptions) -> str:
    return (options.view_as(StandardOptions).runner or "DirectRunner").split(".")[-1]


def runs_remotely(options: PipelineOptions) -> bool:
    """Workers outside this process and machine (Flink, Dataflow, a portable runner's DOCKER, PROCESS or
    EXTERNAL environment): LOOPBACK workers run inside the launcher."""
    loopback = options.view_as(PortableOptions).environment_type == "LOOPBACK"
    return runner_name(options) not in LOCAL_RUNNERS and not loopback


def direct_batch_runner(options: PipelineOptions) -> Optional[Any]:
    """DirectRunner in batch mode: Beam's FnApiRunner, made as DirectRunner makes it for this graph, because
    DirectRunner would first try PrismRunner, fetching its binary from GitHub (a network call at every run,
    and another runner wherever it succeeds). None for any other runner: the one the options name."""
    if runner_name(options) != "DirectRunner" or options.view_as(StandardOptions).streaming:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


REMOTE_STORES = "--qdrant_url (a Qdrant server), --sink pgvector, --sink pinecone or --sink mongodb"


def check_runner(config: SyncConfig, options: PipelineOptions) -> None:
    """Refuses what cannot work on the chosen runner: the embedded store or the default relative dead-letter
    file with out-of-process workers, an unbounded source on a local runner, literal secrets sent to
    remote workers."""
    direct = options.view_as(DirectOptions)
    embedded = any(isinstance(s, QdrantConfig) and s.path for s in config.stores)
    if embedded and direct.direct_running_mode == "multi_processing" and (direct.direct_num_workers or 1) != 1:
        raise StartupError("the embedded Qdrant store (--qdrant_path) allows one process; use one worker or "
                           "--qdrant_url with --direct_running_mode=multi_processing")
    runner = runner_name(options)
    if config.source is not None and config.source.unbounded and runner in LOCAL_RUNNERS:
        raise StartupError(f"an unbounded source never finishes on {runner} (it runs in batch mode here): add "
                           "--kafka_stop_at_end for one bounded run, or --follow SECONDS for successive bounded "
                           "runs; unbounded reading is for streaming runners (Flink, Dataflow)")
    literals = literal_secrets(config)
    if literals and runs_remotely(options):
        raise StartupError(f"a secret given as a literal ({', '.join(literals)}) would have to travel to "
                           f"{runner}'s workers: pass a reference instead, env:NAME (a variable set on the "
                           "workers), file:PATH or gcp-secret:projects/P/secrets/S/versions/V")
    if runs_remotely(options):
        if embedded:
            raise StartupError(f"the embedded Qdrant store (--qdrant_path) lives in one local process; "
                               f"{runner}'s workers cannot share it: use {REMOTE_STORES}")
        if "dead_letters" not in config.model_fields_set:
            raise StartupError(f"the default dead-letter file ./dead_letters.jsonl would be written on each of "
                               f"{runner}'s workers, then lost: name one with --dead_letters (gs://bucket/dlq.jsonl, "
                               "s3://..., or a local path every worker shares, given explicitly)")


def prepare_stores(config: SyncConfig, model: ModelRef) -> None:
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


class RunObserver:
    """What the operator sees of the runs of this process: the metrics endpoint's readiness and backlog (when
    `--metrics_port` is given) and the progress line on a terminal."""

    def __init__(self, endpoint: Optional["MetricsEndpoint"] = None, progress: bool = True) -> None:
        self.endpoint = endpoint
        self.progress = progress

    def ready(self, config: SyncConfig) -> None:
        """The sinks and the source were reached: ready, with the source's backlog on `/metrics`."""
        if self.endpoint is not None:
            self.endpoint.set_ready(True)
            self.endpoint.set_backlog(config.source.backlog if config.source is not None else None)

    def not_ready(self, reason: str) -> None:
        if self.endpoint is not None:
            self.endpoint.set_ready(False, reason)


def run(argv: Optional[Sequence[str]] = None, observer: Optional[RunObserver] = None
        ) -> Union[RunSummary, "SubmittedJob"]:
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
        return _run(config, beam_args, observer or RunObserver(progress=False))


def _messages(error: ValidationError) -> str:
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())


def _run(config: SyncConfig, beam_args: list[str], observer: RunObserver) -> Union[RunSummary, "SubmittedJob"]:
    try:
        model = resolve(config.model, config.backend, config.onnx_cache)
        options = PipelineOptions(beam_args)
        options.view_as(SetupOptions).save_main_session = False
        check_input(config)
        check_runner(config, options)
        remote = runs_remotely(options)
        if not remote:  # remote runners: the workers resolve the model and make the sinks ready
            if model.backend != "torch":
                model.onnx_folder()  # exported now: an unsupported model fails at start; in-process workers reuse it
            prepare_stores(config, model)
    except (StoreConfigError, ModelNotFoundError, UnsupportedModelError) as exc:
        raise StartupError(str(exc)) from exc
    observer.ready(config)
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=direct_batch_runner(options), options=options)
    build_graph(pipeline, config, model, prepare_on_workers=remote)
    progress = Progress(None if config.source else expected_records(config.input, config.input_is_folder),
                        enabled=observer.progress and not remote)
    try:
        result = pipeline.run()
        if remote and options.view_as(StandardOptions).streaming:
            return SubmittedJob(runner_name(options), _job_id(result))  # runs until cancelled: never waited for
        result.wait_until_finish()
    finally:
        progress.stop()
    summary = _summary(result, time.monotonic() - started, [s.sink_name for s in config.stores])
    if not remote:  # the launcher of a remote job need not reach the sinks
        summary = summary.with_store_counts(count_vectors(config))
    if config.summary_json:
        with open(config.summary_json, "w", encoding="utf-8") as fh:
            fh.write(summary.to_json())
    return summary


@dataclass(frozen=True)
class SubmittedJob:
    """A streaming job handed to a remote runner: the launcher reports its id and exits."""

    runner: str
    job_id: Optional[str]

    def render(self) -> str:
        return (f"submitted streaming job {self.job_id or '(the runner gave no id)'} to {self.runner}; it runs "
                "until cancelled (see the runner's console for its progress and counters)")


def _job_id(result: Any) -> Optional[str]:
    job_id = getattr(result, "job_id", None)
    return str(job_id() if callable(job_id) else job_id) if job_id is not None else None


def _summary(result: Any, wall_seconds: float, sinks: list[str]) -> RunSummary:
    """The run's counters; all zero (with a warning) where the runner reports no metrics."""
    try:
        return summary_from_metrics(result, wall_seconds, sinks)
    except Exception as exc:  # noqa: BLE001 - a runner without metrics still ran the job
        log.warning("the runner reported no metrics (%s: %s): the summary shows none", type(exc).__name__, exc)
        return RunSummary(wall_seconds=wall_seconds)


@dataclass(frozen=True)
class ProcessFlags:
    """Flags of the process rather than of one run (see `--help`)."""

    follow: Optional[float] = None
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"


def split_process_flags(argv: Sequence[str]) -> tuple[ProcessFlags, list[str]]:
    """`--follow SECONDS` (continuous sync by successive bounded runs), `--metrics_port`/`--metrics_host`, and
    the arguments of each run."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", add_help=False, allow_abbrev=False)
    parser.add_argument("--follow", type=float, metavar="SECONDS")
    parser.add_argument("--metrics_port", type=int)
    parser.add_argument("--metrics_host", default="127.0.0.1")
    known, rest = parser.parse_known_args(argv)
    return ProcessFlags(known.follow, known.metrics_port, known.metrics_host), rest


def start_endpoint(flags: ProcessFlags) -> Optional["MetricsEndpoint"]:
    """The `/metrics` and `/ready` endpoint when `--metrics_port` is given; a port in use is a `StartupError`."""
    if flags.metrics_port is None:
        return None
    from connectors.metrics_http import MetricsEndpoint

    try:
        return MetricsEndpoint(flags.metrics_port, flags.metrics_host)
    except OSError as exc:
        raise StartupError(f"--metrics_port {flags.metrics_port} on {flags.metrics_host}: {exc.strerror or exc}") from exc


FOLLOW_MAX_BACKOFF_S = 300.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """One run; or, with `--follow SECONDS`, a run every SECONDS after the last one ended (each run reads what
    arrived since the last acknowledged position, e.g. Kafka runs read to the end offsets seen at start).
    With `--follow`, a configuration error in the first run stops it (exit 2); any later failure (a server
    down, say) is logged and the run retried after an exponential backoff (up to 5 minutes)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, argv = split_process_flags(argv)
    pause = flags.follow
    if pause is not None and "--kafka_stop_at_end" not in argv:
        argv.append("--kafka_stop_at_end")  # ignored by the other sources
    try:
        observer = RunObserver(start_endpoint(flags))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    iteration, failures = 0, 0
    while True:
        iteration += 1
        try:
            summary = run(argv, observer)
        except StartupError as exc:
            observer.not_ready(str(exc))
            if pause is None or iteration == 1:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            failures += 1
            log.error("follow run %d could not start: %s", iteration, exc)
        except Exception:  # noqa: BLE001 - a failed follow run is retried; a single run fails as before
            if pause is None:
                raise
            failures += 1
            observer.not_ready(f"follow run {iteration} failed; retrying")
            log.exception("follow run %d failed", iteration)
        else:
            failures = 0
            print(summary.render(), flush=True)
        if pause is None:
            return 0
        time.sleep(follow_delay(pause, failures))


def follow_delay(pause: float, failures: int) -> float:
    """The wait before the next `--follow` run: `pause`, doubled for each failure in a row (capped)."""
    if not failures:
        return pause
    return min(FOLLOW_MAX_BACKOFF_S, max(pause, 1.0) * 2 ** failures)
