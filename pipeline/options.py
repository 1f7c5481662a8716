"""Command-line options → a validated `SyncConfig`; every other argument goes to Beam's PipelineOptions."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.changelog import SAMPLE_CHANGELOG
from connectors.base import StoreConfig
from connectors.pgvector import PgVectorConfig
from connectors.qdrant import DEFAULT_PATH, QdrantConfig
from transforms.chunking import DEFAULT_CHUNK_OVERLAP

SINKS = ("qdrant", "pgvector")


class SyncConfig(BaseModel):
    """Everything the graph needs, validated before the pipeline starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str = str(SAMPLE_CHANGELOG)
    sinks: tuple[str, ...] = ("qdrant",)
    qdrant: QdrantConfig = QdrantConfig()
    pgvector: Optional[PgVectorConfig] = None
    model: Optional[str] = None
    device: str = "cpu"
    chunk_size: Optional[int] = Field(default=None, ge=8)
    chunk_overlap: int = Field(default=DEFAULT_CHUNK_OVERLAP, ge=0)
    batch_size: int = Field(default=64, ge=1)
    lookup_batch_size: int = Field(default=256, ge=1)
    dead_letters: str = "./dead_letters.jsonl"
    summary_json: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "SyncConfig":
        unknown = [s for s in self.sinks if s not in SINKS]
        if unknown:
            raise ValueError(f"unknown sink(s) {unknown}; available: {', '.join(SINKS)}")
        if len(self.sinks) != 1:
            raise ValueError("exactly one --sink for now: fan-out to several stores is not implemented yet")
        if "pgvector" in self.sinks and self.pgvector is None:
            raise ValueError("--sink pgvector needs --pg_dsn (or the PG_DSN environment variable)")
        if self.chunk_size is not None and self.chunk_overlap >= self.chunk_size:
            raise ValueError("--chunk_overlap must be smaller than --chunk_size")
        return self

    @property
    def store(self) -> StoreConfig:
        """The configured sink's settings."""
        return self.pgvector if self.sinks[0] == "pgvector" and self.pgvector else self.qdrant

    @property
    def input_is_folder(self) -> bool:
        return Path(self.input).is_dir()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Keep a vector store exactly in sync with a change-log or folder of documents. "
                    "Any other argument is a Beam pipeline option (default --runner=DirectRunner).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = parser.add_argument_group("source")
    src.add_argument("--input", default=str(SAMPLE_CHANGELOG),
                     help="JSONL change-log, a glob of them, or a folder of documents")
    sink = parser.add_argument_group("sink")
    sink.add_argument("--sink", action="append", choices=SINKS, help="vector store to keep in sync (default: qdrant)")
    sink.add_argument("--qdrant_path", default=None, help=f"embedded Qdrant folder (default {DEFAULT_PATH})")
    sink.add_argument("--qdrant_url", default=None, help="Qdrant server URL instead of the embedded store")
    sink.add_argument("--qdrant_api_key_env", default="QDRANT_API_KEY",
                      help="environment variable holding the Qdrant API key (never logged)")
    sink.add_argument("--collection", default="documents", help="collection name")
    sink.add_argument("--no_create_collection", action="store_true",
                      help="fail at start if the collection does not exist, instead of creating it")
    sink.add_argument("--pg_dsn", default=None,
                      help="PostgreSQL connection string for --sink pgvector (default: $PG_DSN; never logged)")
    sink.add_argument("--pg_table", default="documents", help="pgvector table")
    sink.add_argument("--write_batch_size", type=int, default=256, help="chunk records per store write")
    emb = parser.add_argument_group("embedding")
    emb.add_argument("--model", default=None,
                     help="local model folder or locally cached name (default: bundled all-MiniLM-L6-v2)")
    emb.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    emb.add_argument("--chunk_size", type=int, default=None,
                     help="tokens per chunk (default: the model's max sequence length less special tokens)")
    emb.add_argument("--chunk_overlap", type=int, default=DEFAULT_CHUNK_OVERLAP, help="tokens shared by neighbours")
    emb.add_argument("--batch_size", type=int, default=64, help="chunks per embedding batch")
    emb.add_argument("--lookup_batch_size", type=int, default=256,
                     help="documents per store look-up (what the store holds for them)")
    out = parser.add_argument_group("output")
    out.add_argument("--dead_letters", default="./dead_letters.jsonl", help="dead-letter JSONL file")
    out.add_argument("--summary_json", default=None, help="also write the run summary as JSON here")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[SyncConfig, list[str]]:
    """`(config, beam_args)`; raises `pydantic.ValidationError` or `SystemExit` on bad flags."""
    args, beam_args = build_parser().parse_known_args(argv)
    api_key = os.environ.get(args.qdrant_api_key_env)
    qdrant = QdrantConfig(
        path=args.qdrant_path, url=args.qdrant_url, api_key=SecretStr(api_key) if api_key else None,
        collection=args.collection, create_collection=not args.no_create_collection,
        batch_size=args.write_batch_size)
    pg_dsn = args.pg_dsn or os.environ.get("PG_DSN")
    pgvector = PgVectorConfig(dsn=SecretStr(pg_dsn), table=args.pg_table, create_table=not args.no_create_collection,
                              batch_size=args.write_batch_size) if pg_dsn else None
    config = SyncConfig(
        input=args.input, sinks=tuple(args.sink or ("qdrant",)), qdrant=qdrant, pgvector=pgvector, model=args.model,
        device=args.device, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
        batch_size=args.batch_size, lookup_batch_size=args.lookup_batch_size, dead_letters=args.dead_letters, summary_json=args.summary_json)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=DirectRunner", *beam_args]
    return config, beam_args
