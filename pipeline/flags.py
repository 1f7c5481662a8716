"""The command line's flags (`build_parser`) and the check of what is left over for Beam: import-light (no
Beam, no model library, no store client), so `--help` and usage errors answer at once; `pipeline.options`
turns the parsed flags into a validated `SyncConfig`."""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from transforms.defaults import DEFAULT_CALL_COST_TOKENS, DEFAULT_CHUNK_OVERLAP, DEFAULT_QDRANT_PATH, SAMPLE_CHANGELOG
from transforms.layouts import LAYOUTS
from transforms.model import FINGERPRINT_CACHE

SINKS = ("qdrant", "pgvector", "pinecone", "mongodb")
SOURCES = ("changelog", "redis", "kafka", "pubsub", "azure_queue", "sqs")


def switch_value(value: str) -> bool:
    """An on/off flag's value when one is given (`--flag=true`, as a Dataflow flex template passes it)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


SWITCH: dict[str, Any] = {"nargs": "?", "const": True, "default": None, "type": switch_value, "metavar": "true|false"}
"""An on/off flag: `--flag` or `--flag=true` turns it on, `--flag=false` off (absent: the default)."""


def build_parser() -> argparse.ArgumentParser:
    """Every default is `None` here so that a flag given on the command line can be told from one left out;
    the effective defaults are `SyncConfig`'s and each sink config's (shown in --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Keep vector stores exactly in sync with a change-log or folder of documents. "
                    "Any other argument is a Beam pipeline option (default: --runner=DirectRunner).")
    parser.add_argument("--config", default=None,
                        help="YAML or JSON file with any of these settings and a 'sinks' list; flags override it")
    src = parser.add_argument_group("source")
    src.add_argument("--source", choices=SOURCES, help="where changes come from (default: changelog, "
                                                       "which reads --input)")
    src.add_argument("--redis_url", help="Redis URL for --source redis, a secret: env:NAME, file:PATH or "
                                         "gcp-secret:... (default: env:REDIS_URL)")
    src.add_argument("--redis_stream", help="Redis stream to read")
    src.add_argument("--redis_group", help="consumer group (created at the stream's start when missing)")
    src.add_argument("--redis_consumer", help="consumer name; keep it stable across runs (default: vector-sync-HOST)")
    src.add_argument("--redis_claim_idle_ms", type=int,
                     help="claim entries pending on other consumers idle this long (default: 60000)")
    src.add_argument("--max_records", type=int,
                     help="--source redis, pubsub, azure_queue or sqs: stop reading after this many records "
                          "(messages; default: 10000)")
    src.add_argument("--max_read_seconds", type=float,
                     help="--source redis, pubsub, azure_queue or sqs: stop reading after this many seconds, so a "
                          "run ends under steady traffic (default: 300)")
    src.add_argument("--max_delivery_attempts", type=int,
                     help="a record delivered more often than this (Redis delivery count, Pub/Sub delivery "
                          "attempt, Azure dequeue count, SQS receive count, Kafka runs started at its offset) is dead-lettered "
                          "unprocessed and acknowledged (default: 5)")
    src.add_argument("--pubsub_subscription", help="projects/P/subscriptions/S for --source pubsub")
    src.add_argument("--pubsub_native", **SWITCH,
                     help="use Beam's ReadFromPubSub (Dataflow, streaming) instead of the pull-and-ack-after-apply reader")
    src.add_argument("--azure_queue", help="Azure Storage Queue receiving Event Grid notifications (--source azure_queue)")
    src.add_argument("--sqs_queue_url", help="SQS queue URL receiving S3 event notifications (--source sqs); "
                                             "region, credentials and endpoint from the AWS chain")
    src.add_argument("--sqs_wait_seconds", type=int,
                     help="--source sqs: long-poll wait per receive, 0-20; the run ends after one empty wait "
                          "(default: 10)")
    src.add_argument("--azure_connection_string",
                     help="Azure Storage connection string for the queue and blob fetches, a secret: env:NAME, "
                          "file:PATH or gcp-secret:... (default: env:AZURE_STORAGE_CONNECTION_STRING)")
    src.add_argument("--notifications", choices=("auto", "eventgrid", "gcs", "s3"),
                     help="records are object-store notifications (Event Grid, GCS, S3; auto-detected): "
                          "the objects are fetched and their text extracted")
    src.add_argument("--max_document_bytes", type=int, help="larger objects are dead-lettered (default: 20 MiB)")
    src.add_argument("--allow_local_root", action="append", metavar="DIR",
                     help="a uri may name a file under DIR (symlinks and '..' resolved first); repeatable "
                          "(default: no local file is read through a uri)")
    src.add_argument("--allow_bucket", action="append", metavar="gs://BUCKET|s3://BUCKET",
                     help="a uri may name an object in this bucket; repeatable")
    src.add_argument("--allow_azure_account", action="append", metavar="ACCOUNT[/CONTAINER]",
                     help="a uri may name a blob in this storage account (or only this container); repeatable; "
                          "the --azure_connection_string account is allowed too")
    src.add_argument("--kafka_bootstrap", help="Kafka bootstrap servers HOST:PORT[,HOST:PORT]")
    src.add_argument("--kafka_topic", type=_comma_list, help="topic(s) to read, comma-separated")
    src.add_argument("--kafka_group", help="consumer group whose committed offsets the run starts from and commits")
    src.add_argument("--kafka_stop_at_end", **SWITCH,
                     help="read to the end offsets seen at start, then finish (backfills, tests, successive runs)")
    src.add_argument("--kafka_config", action="append", metavar="KEY=VALUE",
                     help="extra librdkafka setting, repeatable; the value of a secret one (sasl.password, "
                          "ssl.key.password, ...) is a secret: env:NAME, file:PATH or gcp-secret:...")
    src.add_argument("--kafka_json_schema", help="JSON Schema file that every Kafka value must satisfy")
    src.add_argument("--doc_id_field", help="dotted path of the doc_id in another JSON shape (default: the record key)")
    src.add_argument("--text_fields", type=_comma_list, help="dotted paths whose values make the text, comma-separated")
    src.add_argument("--version_field", help="dotted path of the version in another JSON shape (default: 'version')")
    src.add_argument("--kafka_version_from", choices=("field", "offset", "timestamp"),
                     help="one version source for values and tombstones: 'field' (default: the value's version "
                          "or --version_field; a tombstone's 'version' header), 'offset' or 'timestamp' (ms)")
    src.add_argument("--dead_letter_topic", help="also produce dead letters to this Kafka topic (Connect-style headers)")
    src.add_argument("--input", help=f"JSONL change-log, a glob of them, or a folder of documents "
                                     f"(default: the shipped sample {SAMPLE_CHANGELOG.name})")
    sink = parser.add_argument_group("sinks (give --sink several times to write to several stores)")
    sink.add_argument("--sink", action="append", choices=SINKS, help="vector store to keep in sync (default: qdrant)")
    sink.add_argument("--qdrant_path", help=f"embedded Qdrant folder (default: {DEFAULT_QDRANT_PATH})")
    sink.add_argument("--qdrant_url", help="Qdrant server URL instead of the embedded store")
    sink.add_argument("--qdrant_api_key_env", default="QDRANT_API_KEY",
                      help="environment variable holding the Qdrant API key (passed on as env:NAME)")
    sink.add_argument("--collection", help="Qdrant collection (default: documents)")
    sink.add_argument("--qdrant_embedded", choices=("edge", "client"),
                      help="embedded store engine: 'edge' (default; Qdrant Edge, the Qdrant engine in-process) or "
                           "'client' (qdrant-client's local mode, for LangChain/LlamaIndex opening the folder)")
    sink.add_argument("--qdrant_local_durability", choices=("fast", "full"),
                      help="embedded store: 'fast' (default; safe if the pipeline crashes, the last writes may be "
                           "lost on power loss) or 'full' (flushed to disk after each write batch; use it when a "
                           "streaming source's acknowledgement must mean on disk)")
    sink.add_argument("--pg_dsn", help="PostgreSQL connection string for --sink pgvector, a secret: "
                                      "env:NAME, file:PATH or gcp-secret:... (default: env:PG_DSN)")
    sink.add_argument("--pg_table", help="pgvector table (default: documents)")
    sink.add_argument("--pinecone_index_host", help="Pinecone index host (default: $PINECONE_INDEX_HOST); "
                                                    "the API key is read from $PINECONE_API_KEY")
    sink.add_argument("--pinecone_namespace", help="one Pinecone namespace for all events (default: each event's)")
    sink.add_argument("--mongo_uri", help="MongoDB URI for --sink mongodb, a secret: env:NAME, file:PATH or "
                                        "gcp-secret:... (default: env:MONGODB_URI)")
    sink.add_argument("--mongo_db", help="MongoDB database (default: vector_sync)")
    sink.add_argument("--mongo_collection", help="MongoDB collection (default: documents)")
    sink.add_argument("--mongo_client_factory",
                      help="module:callable that makes the client from the URI (default: pymongo:MongoClient)")
    sink.add_argument("--no_create_collection", **SWITCH,
                      help="fail at start if a collection or table does not exist, instead of creating it")
    sink.add_argument("--write_batch_size", type=int, help="chunk records per store write (default: 256; Pinecone 100)")
    sink.add_argument("--write_batch_bytes", type=int, help="approximate bytes per store write (default: 8 MiB)")
    sink.add_argument("--payload_layout", choices=LAYOUTS,
                      help="how chunks are shaped in every sink: 'native' (default), or what LangChain's or "
                           "LlamaIndex's vector store for that sink reads as it is (README: Reading the stores)")
    emb = parser.add_argument_group("embedding")
    emb.add_argument("--model", help="local model folder or locally cached name (default: bundled all-MiniLM-L6-v2)")
    emb.add_argument("--backend", choices=("torch", "onnx-int8"),
                     help="embedding backend (default: torch); onnx-int8 exports the model once to an int8 ONNX "
                          "model and runs it with ONNX Runtime (faster on CPU, vectors within ~1%% of fp32)")
    emb.add_argument("--onnx_cache", help="folder for the int8 ONNX export (default: ~/.cache/beam-vector-sync/onnx)")
    emb.add_argument("--device", help="torch device for the model (default: cpu; cuda)")
    emb.add_argument("--chunk_size", type=int,
                     help="tokens per chunk (default: the model's max sequence length less special tokens)")
    emb.add_argument("--chunk_overlap", type=int, help=f"tokens shared by neighbours (default: {DEFAULT_CHUNK_OVERLAP})")
    emb.add_argument("--batch_size", type=int, help="chunks per embedding batch (default: 64)")
    emb.add_argument("--call_cost_tokens", type=int,
                     help="split a batch of mixed lengths into model calls where each extra call saves more than "
                          f"this many padded token slots (default: {DEFAULT_CALL_COST_TOKENS}; 0 = one call per "
                          "length, a large value = never split; raise it on a GPU)")
    emb.add_argument("--lookup_batch_size", type=int,
                     help="documents per store look-up (what the stores hold for them; default: 256)")
    src.add_argument("--follow", type=float, metavar="SECONDS",
                     help="continuous sync on one machine: a bounded run, then another SECONDS after it ends, ...")
    out = parser.add_argument_group("output")
    out.add_argument("--dead_letters", help="dead-letter JSONL file (default: ./dead_letters.jsonl)")
    out.add_argument("--summary_json", help="also write the run summary as JSON here")
    out.add_argument("--metrics_port", type=int,
                     help="serve Prometheus metrics on /metrics and readiness on /ready at this port while the "
                          "process runs (in-process runners; remote runners show the same counters as Beam metrics)")
    out.add_argument("--metrics_host", help="address the metrics endpoint binds (default: 127.0.0.1; 0.0.0.0 to "
                                            "let a scraper on another machine reach it)")
    return parser


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def command_line_error(argv: Sequence[str]) -> Optional[str]:
    """Parses `argv` as the entry point will: `--help` prints the help and a malformed flag the usage error
    (both exit, as argparse does); a mistyped flag is returned as a one-line message; None when the command
    line can go on to the run."""
    parser = build_parser()
    _, beam_args = parser.parse_known_args(argv)
    try:
        refuse_mistyped_flags(beam_args, parser)
    except ValueError as exc:
        return str(exc)
    return None


def refuse_mistyped_flags(beam_args: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Raise ValueError for an argument left over for Beam that Beam does not know but that is a hyphenated
    or close spelling of one of our flags or of a Beam option (Beam would log its value and ignore it).
    The message names the flag and the likely one, never the value. Other unknown flags pass to Beam."""
    ours = [o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for arg in beam_args:
        if not arg.startswith("--") or arg == "--":
            continue
        beams = beam_option_names()  # listed only when there is something to check
        name = arg[2:].split("=", 1)[0]
        if name in beams:
            continue
        normal = name.replace("-", "_")
        close = [normal] if normal in ours or normal in beams else difflib.get_close_matches(
            normal, [*ours, *beams], n=1, cutoff=0.8)
        if close:
            raise ValueError(f"unknown option --{name}: did you mean --{close[0]}?")


def beam_option_names_cache() -> Path:
    """Where the list of Beam's options is kept: one file per Beam version, beside the fingerprint cache."""
    return FINGERPRINT_CACHE.with_name(f"beam-options-{metadata.version('apache-beam')}.json")


@functools.lru_cache(maxsize=1)
def beam_option_names() -> frozenset[str]:
    """Every option Beam's PipelineOptions classes define (as Beam's own parser collects them). Listing them
    imports Beam, which takes seconds, so the list is read from `beam_option_names_cache()` once made."""
    cache = beam_option_names_cache()
    try:
        return frozenset(json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    names = _list_beam_options()
    try:  # atomic replace; a cache that cannot be written only costs the listing next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(names)), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass
    return names


def _list_beam_options() -> frozenset[str]:
    import apache_beam  # noqa: F401 - every option class Beam registers on import
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself lists its options
    return frozenset(o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--"))
