"""`python -m pipeline.search "query" [sink options] [--filter KEY=VALUE] [--namespace NS] [--top_k 5]`: the
chunks nearest to a query in any sink the pipeline writes (Qdrant embedded or server, pgvector, MongoDB,
Pinecone), embedded with the same (local) model the pipeline used. The sink options are the pipeline's own
(`--config`, `--sink`, `--qdrant_path`, `--pg_dsn`, `--mongo_uri`, `--pinecone_index_host`, `--payload_layout`,
...); with several sinks configured, `--sink` picks one."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Mapping, Optional, Sequence

from connectors.base import StoreConfig, StoreConfigError
from pipeline.options import add_store_arguments, stores_from_arguments
from transforms.model import load_sentence_transformer, resolve_model


def search(query: str, config: StoreConfig, model: Optional[str] = None, top_k: int = 5,
           metadata: Optional[Mapping[str, Any]] = None, namespace: Optional[str] = None) -> list[dict[str, Any]]:
    """Hits as dicts with `score`, `doc_id`, `namespace`, `chunk_index`, `version`, `text` and `metadata`, best
    first; `StoreConfigError` when the store cannot be opened or searched as configured."""
    store = config.create_store()
    try:
        has_collection = getattr(store, "has_collection", None)
        if has_collection is not None and not has_collection():
            raise StoreConfigError(f"collection {getattr(config, 'collection', '')!r} does not exist "
                                   "(run the pipeline first)")
        encoder = load_sentence_transformer(resolve_model(model))
        vector = encoder.encode([query], normalize_embeddings=True, show_progress_bar=False)[0].tolist()
        hits = store.nearest(vector, top_k, metadata=metadata, namespace=namespace)
    finally:
        store.close()
    return [asdict(hit) for hit in hits]


def parse_filter(pair: str) -> tuple[str, Any]:
    """`KEY=VALUE`: a JSON number, `true`/`false` or a quoted JSON string is that value, anything else the
    text itself (`year=2024` is the number, `year='"2024"'` the string)."""
    key, sep, text = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--filter {pair!r}: expected KEY=VALUE")
    try:
        value = json.loads(text)
    except ValueError:
        return key, text
    if isinstance(value, (str, bool, int, float)):
        return key, value
    return key, text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query")
    parser.add_argument("--top_k", type=int, default=5, help="hits to show (default: 5)")
    parser.add_argument("--filter", action="append", type=parse_filter, default=[], metavar="KEY=VALUE",
                        help="only chunks whose event metadata has KEY equal to VALUE; repeatable (all must hold)")
    parser.add_argument("--namespace", help="only chunks of events in this namespace")
    add_store_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sinks, model = stores_from_arguments(args)
    except ValueError as exc:  # pydantic's ValidationError is one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(sinks) != 1:
        print(f"error: {len(sinks)} sinks are configured ({', '.join(s.sink_name for s in sinks)}): "
              "pick one with --sink", file=sys.stderr)
        return 2
    try:
        hits = search(args.query, sinks[0], model, args.top_k, dict(args.filter), args.namespace)
    except StoreConfigError as exc:  # a folder another process writes, a missing collection, a refused filter
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a missing table, an unreachable server: one line, not a traceback
        print(f"error: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    print(f"query: {args.query}")
    for rank, hit in enumerate(hits, start=1):
        text = " ".join((hit["text"] or "").split())
        where = f" namespace={hit['namespace']}" if hit["namespace"] else ""
        print(f"{rank}. score={hit['score']:.3f} doc_id={hit['doc_id']}{where} chunk_index={hit['chunk_index']} "
              f"version={hit['version']}\n   {text[:160]}{'...' if len(text) > 160 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
