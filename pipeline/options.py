"""Command-line options and an optional `--config FILE` (YAML or JSON) → a validated `SyncConfig`; every
other argument goes to Beam's PipelineOptions.

Precedence: flags given on the command line override the file, the file overrides the defaults. `--sink`
on the command line replaces the file's list of sinks (each keeps the file's settings for that sink type);
sink flags such as `--collection` apply to the sink of their type, wherever it was listed.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.azure_queue import AzureQueueConfig
from connectors.base import StoreConfig
from connectors.objects import FetchConfig
from connectors.kafka import KafkaConfig
from connectors.mongodb import MongoConfig
from connectors.pgvector import PgVectorConfig
from connectors.pinecone import PineconeConfig
from connectors.pubsub import PubSubConfig
from connectors.qdrant import QdrantConfig
from connectors.redis_streams import RedisStreamConfig
from connectors.sqs import SqsConfig
from pipeline.flags import build_parser, refuse_mistyped_flags
from transforms.defaults import DEFAULT_CALL_COST_TOKENS, DEFAULT_CHUNK_OVERLAP, SAMPLE_CHANGELOG

SinkConfig = Annotated[Union[QdrantConfig, PgVectorConfig, PineconeConfig, MongoConfig], Field(discriminator="type")]
StreamSource = Annotated[Union[RedisStreamConfig, KafkaConfig, PubSubConfig, AzureQueueConfig, SqsConfig],
                         Field(discriminator="type")]


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
            "batch_size", "call_cost_tokens", "lookup_batch_size", "dead_letters", "summary_json")


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
