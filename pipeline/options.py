"""Command-line options and an optional `--config FILE` (YAML or JSON) → a validated `SyncConfig`; every
other argument goes to Beam's PipelineOptions.

Precedence: flags given on the command line override the file, the file overrides the defaults. `--sink`
on the command line replaces the file's list of sinks (each keeps the file's settings for that sink type);
sink flags such as `--collection` apply to the sink of their type, wherever it was listed.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.azure_queue import AzureQueueConfig
from connectors.base import StoreConfig
from connectors.objects import FetchConfig
from connectors.changelog import SAMPLE_CHANGELOG
from connectors.kafka import KafkaConfig
from connectors.mongodb import MongoConfig
from connectors.pgvector import PgVectorConfig
from connectors.pinecone import PineconeConfig
from connectors.pubsub import PubSubConfig
from connectors.qdrant import DEFAULT_PATH, QdrantConfig
from connectors.redis_streams import RedisStreamConfig
from connectors.sqs import SqsConfig
from transforms.chunking import DEFAULT_CHUNK_OVERLAP
from transforms.embedding import DEFAULT_CALL_COST_TOKENS
from transforms.layouts import LAYOUTS

SinkConfig = Annotated[Union[QdrantConfig, PgVectorConfig, PineconeConfig, MongoConfig], Field(discriminator="type")]
SINKS = ("qdrant", "pgvector", "pinecone", "mongodb")
StreamSource = Annotated[Union[RedisStreamConfig, KafkaConfig, PubSubConfig, AzureQueueConfig, SqsConfig],
                         Field(discriminator="type")]
SOURCES = ("changelog", "redis", "kafka", "pubsub", "azure_queue", "sqs")


class SyncConfig(BaseModel):
    """Everything the graph needs, validated before the pipeline starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str = str(SAMPLE_CHANGELOG)
    source: Optional[StreamSource] = None
    """A streaming source; None reads `input` (a change-log, a glob of them, or a folder)."""
    notifications: Optional[str] = Field(default=None, pattern="^(auto|eventgrid|gcs|s3)$")
    """Parse the source's records as object-store notifications (the content is fetched)."""
    fetch: FetchConfig = FetchConfig()
    sinks: tuple[SinkConfig, ...] = (QdrantConfig(),)
    model: Optional[str] = None
    device: str = "cpu"
    backend: str = Field(default="torch", pattern="^(torch|onnx-int8)$")
    onnx_cache: Optional[str] = None
    chunk_size: Optional[int] = Field(default=None, ge=8)
    chunk_overlap: int = Field(default=DEFAULT_CHUNK_OVERLAP, ge=0)
    batch_size: int = Field(default=64, ge=1)
    call_cost_tokens: int = Field(default=DEFAULT_CALL_COST_TOKENS, ge=0)
    """A batch of mixed lengths is split into model calls where that saves more padded token slots than this
    per extra call (`transforms.embedding.padding_aware_groups`)."""
    lookup_batch_size: int = Field(default=256, ge=1)
    window_seconds: int = Field(default=10, ge=1)
    """Window length for unbounded sources on streaming runners."""
    dead_letters: str = "./dead_letters.jsonl"
    summary_json: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "SyncConfig":
        if not self.sinks:
            raise ValueError("at least one sink is needed")
        names = [s.sink_name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}: give repeated sink types a 'name'")
        if self.chunk_size is not None and self.chunk_overlap >= self.chunk_size:
            raise ValueError("--chunk_overlap must be smaller than --chunk_size")
        return self

    @property
    def stores(self) -> tuple[StoreConfig, ...]:
        return tuple(self.sinks)

    @property
    def input_is_folder(self) -> bool:
        """A local folder, or a remote one given with a trailing slash (`gs://bucket/docs/`)."""
        return Path(self.input).is_dir() or ("://" in self.input and self.input.endswith("/"))


ANY_SOURCE = "*"
"""In `_SOURCE_FLAGS`: the flag sets the field of whichever source is chosen, if that source has the field."""
_SOURCE_CLASSES = {c.model_fields["type"].default: c
                   for c in (RedisStreamConfig, KafkaConfig, PubSubConfig, AzureQueueConfig, SqsConfig)}

# Flags that set a sink's field: flag → (sink type, field). Read from the environment where noted.
_SINK_FLAGS: dict[str, tuple[str, str]] = {
    "qdrant_path": ("qdrant", "path"), "qdrant_url": ("qdrant", "url"), "collection": ("qdrant", "collection"),
    "qdrant_local_durability": ("qdrant", "local_durability"), "qdrant_embedded": ("qdrant", "embedded"),
    "pg_dsn": ("pgvector", "dsn"), "pg_table": ("pgvector", "table"),
    "pinecone_index_host": ("pinecone", "index_host"), "pinecone_namespace": ("pinecone", "namespace"),
    "mongo_uri": ("mongodb", "uri"), "mongo_db": ("mongodb", "database"),
    "mongo_collection": ("mongodb", "collection"), "mongo_client_factory": ("mongodb", "client_factory"),
}
_ENV_DEFAULTS = {"pg_dsn": "PG_DSN", "pinecone_index_host": "PINECONE_INDEX_HOST", "mongo_uri": "MONGODB_URI"}
_CREATE_FIELD = {"qdrant": "create_collection", "pgvector": "create_table", "mongodb": "create_collection"}
_SOURCE_FLAGS: dict[str, tuple[str, str]] = {
    "redis_url": ("redis", "url"), "redis_stream": ("redis", "stream"), "redis_group": ("redis", "group"),
    "redis_consumer": ("redis", "consumer"), "redis_claim_idle_ms": ("redis", "claim_idle_ms"),
    "max_records": (ANY_SOURCE, "max_records"), "max_read_seconds": (ANY_SOURCE, "max_read_seconds"),
    "max_delivery_attempts": (ANY_SOURCE, "max_delivery_attempts"),
    "pubsub_subscription": ("pubsub", "subscription"), "pubsub_native": ("pubsub", "native"),
    "azure_queue": ("azure_queue", "queue"), "sqs_queue_url": ("sqs", "queue_url"),
    "sqs_wait_seconds": ("sqs", "wait_time_s"), "azure_connection_string": ("azure_queue", "connection_string"),
    "kafka_bootstrap": ("kafka", "bootstrap"), "kafka_topic": ("kafka", "topics"), "kafka_group": ("kafka", "group"),
    "kafka_stop_at_end": ("kafka", "stop_at_end"), "kafka_json_schema": ("kafka", "json_schema"),
    "doc_id_field": ("kafka", "doc_id_field"), "text_fields": ("kafka", "text_fields"),
    "version_field": ("kafka", "version_field"), "kafka_version_from": ("kafka", "version_from"),
    "dead_letter_topic": ("kafka", "dead_letter_topic"),
}
_SOURCE_ENV = {"redis_url": "REDIS_URL"}
_SECRET_FLAGS = frozenset({"pg_dsn", "mongo_uri", "redis_url", "azure_connection_string"})
"""Flags whose value is a secret reference (connectors/secrets.py); their environment defaults are passed on
as `env:NAME`, never as the value."""
_ALLOW_FLAGS = {"allow_local_root": "local_roots", "allow_bucket": "buckets", "allow_azure_account": "azure_accounts"}
"""Flags that set the fetch allow-list (`fetch.allow` in a config file); given, each replaces the file's list."""
_GENERAL = ("notifications", "input", "model", "device", "backend", "onnx_cache", "chunk_size", "chunk_overlap",
            "batch_size", "call_cost_tokens", "lookup_batch_size", "window_seconds", "dead_letters", "summary_json")


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
    sink.add_argument("--qdrant_path", help=f"embedded Qdrant folder (default: {DEFAULT_PATH})")
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
    src.add_argument("--window_seconds", type=int, help="window length for unbounded sources on streaming runners (default: 10)")
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


def _key_values(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--kafka_config {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML (`.yaml`/`.yml`) or JSON file as a dict; raises ValueError with the file name on bad content."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise ValueError(f"--config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings at the top level")
    return data


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[SyncConfig, list[str]]:
    """`(config, beam_args)`; raises `pydantic.ValidationError`, `ValueError` or `SystemExit` on bad input."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    refuse_mistyped_flags(beam_args, parser)
    settings = load_config_file(args.config) if args.config else {}
    for name in _GENERAL:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    settings["sinks"] = _sink_settings(args, settings.get("sinks"))
    fetch = dict(settings.get("fetch") or {})
    if args.max_document_bytes is not None:
        fetch["max_document_bytes"] = args.max_document_bytes
    if args.azure_connection_string is not None:
        fetch["azure_connection_string"] = args.azure_connection_string
    allow = dict(fetch.get("allow") or {})
    for flag, field in _ALLOW_FLAGS.items():
        if getattr(args, flag):
            allow[field] = getattr(args, flag)
    fetch["allow"] = allow
    settings["fetch"] = fetch
    source = _source_settings(args, settings.get("source"))
    if source is not None:
        settings["source"] = source
    config = SyncConfig.model_validate(settings)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=DirectRunner", *beam_args]
    return config, beam_args


def refuse_mistyped_flags(beam_args: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Raise ValueError for an argument left over for Beam that Beam does not know but that is a hyphenated
    or close spelling of one of our flags or of a Beam option (Beam would log its value and ignore it).
    The message names the flag and the likely one, never the value. Other unknown flags pass to Beam."""
    ours = [o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")]
    beams = _beam_option_names()
    for arg in beam_args:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg[2:].split("=", 1)[0]
        if name in beams:
            continue
        normal = name.replace("-", "_")
        close = [normal] if normal in ours or normal in beams else difflib.get_close_matches(
            normal, [*ours, *beams], n=1, cutoff=0.8)
        if close:
            raise ValueError(f"unknown option --{name}: did you mean --{close[0]}?")


@functools.lru_cache(maxsize=1)
def _beam_option_names() -> frozenset[str]:
    """Every option Beam's PipelineOptions classes define (as Beam's own parser collects them)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself lists its options
    return frozenset(o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--"))


def _sink_settings(args: argparse.Namespace, from_file: Optional[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The sinks' settings: the file's list (or `--sink`'s, which replaces it), with sink flags applied."""
    listed = [dict(s) for s in (from_file or [])]
    if args.sink:
        by_type = {s.get("type"): s for s in listed}
        listed = [dict(by_type.get(t, {"type": t})) for t in dict.fromkeys(args.sink)]
    if not listed:
        listed = [{"type": "qdrant"}]
    for flag, (sink_type, field) in _SINK_FLAGS.items():
        value = getattr(args, flag)
        if value is None and flag in _ENV_DEFAULTS:
            value = _from_environment(_ENV_DEFAULTS[flag], reference=flag in _SECRET_FLAGS)
            apply = lambda s, f=field: f not in s  # noqa: E731 - the environment fills gaps only
        else:
            apply = lambda s, f=field: True  # noqa: E731
        if value is not None:
            for s in listed:
                if s.get("type") == sink_type and apply(s):
                    s[field] = value
    api_key = _from_environment(args.qdrant_api_key_env, reference=True)
    for s in listed:
        if s.get("type") == "qdrant" and api_key and "api_key" not in s:
            s["api_key"] = api_key
        if args.no_create_collection and s.get("type") in _CREATE_FIELD:
            s[_CREATE_FIELD[s["type"]]] = False
        if args.write_batch_size is not None:
            s["batch_size"] = args.write_batch_size
        if args.write_batch_bytes is not None:
            s["batch_bytes"] = args.write_batch_bytes
        if args.payload_layout is not None:
            s["payload_layout"] = args.payload_layout
    _require(listed, "pgvector", "dsn", "--sink pgvector needs --pg_dsn (or the PG_DSN environment variable)")
    _require(listed, "pinecone", "index_host",
             "--sink pinecone needs --pinecone_index_host (or the PINECONE_INDEX_HOST environment variable)")
    _require(listed, "mongodb", "uri", "--sink mongodb needs --mongo_uri (or the MONGODB_URI environment variable)")
    return listed


def _source_settings(args: argparse.Namespace, from_file: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The streaming source's settings (None for the change-log/folder source), flags over the file."""
    source = dict(from_file or {})
    if args.source:
        if args.source == "changelog":
            return None
        if source.get("type") != args.source:
            source = {"type": args.source}
    if not source:
        return None
    for flag, (source_type, field) in _SOURCE_FLAGS.items():
        value = getattr(args, flag)
        if value is None and flag in _SOURCE_ENV and field not in source:
            value = _from_environment(_SOURCE_ENV[flag], reference=flag in _SECRET_FLAGS)
        if value is not None and source_type == ANY_SOURCE and (
                field not in _SOURCE_CLASSES[source["type"]].model_fields):
            raise ValueError(f"--{flag} does not apply to --source {source['type']}")
        if value is not None and source_type in (source["type"], ANY_SOURCE):
            source[field] = value
    if args.kafka_config and source["type"] == "kafka":
        source["client_config"] = {**source.get("client_config", {}), **_key_values(args.kafka_config)}
    return source


def _from_environment(name: str, reference: bool) -> Optional[str]:
    """An environment default: `env:NAME` for a secret (workers resolve it), else the value; None if unset."""
    if not os.environ.get(name):
        return None
    return f"env:{name}" if reference else os.environ[name]


def _require(sinks: list[dict[str, Any]], sink_type: str, field: str, message: str) -> None:
    if any(s.get("type") == sink_type and not s.get(field) for s in sinks):
        raise ValueError(message)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline's own `--config`, sink flags and `--model` on another tool's parser (the same definitions,
    so a tool that opens the stores the pipeline wrote takes the same options)."""
    pipeline = build_parser()
    wanted = {"config", "model"}
    for group in pipeline._action_groups:  # noqa: SLF001 - argparse keeps a group's actions here
        if group.title and group.title.startswith("sinks"):
            target = parser.add_argument_group(group.title)
            for action in group._group_actions:  # noqa: SLF001
                target._add_action(action)  # noqa: SLF001
    for action in pipeline._actions:  # noqa: SLF001
        if action.dest in wanted:
            parser._add_action(action)  # noqa: SLF001


def stores_from_arguments(args: argparse.Namespace) -> tuple[tuple[StoreConfig, ...], Optional[str]]:
    """`(sinks, model)` from arguments parsed with `add_store_arguments`, as `parse_args` would make them
    (flags over the `--config` file, the environment filling gaps); raises like `parse_args`."""
    settings = load_config_file(args.config) if args.config else {}
    config = SyncConfig.model_validate({"sinks": _sink_settings(args, settings.get("sinks")),
                                        "model": args.model if args.model is not None else settings.get("model")})
    return config.stores, config.model
