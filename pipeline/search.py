"""`python -m pipeline.search "query" [--qdrant_path DIR] [--collection NAME] [--top_k 5]`: the best chunks
for a query, embedded with the same (local) model the pipeline used."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from connectors.base import StoreConfigError
from connectors.qdrant import DEFAULT_PATH, QdrantConfig
from transforms.model import load_sentence_transformer, resolve_model


def search(query: str, config: QdrantConfig, model: Optional[str] = None, top_k: int = 5) -> list[dict[str, Any]]:
    """Hits as dicts with `score`, `doc_id`, `chunk_index`, `version` and `text`, best first; `StoreConfigError`
    when the store cannot be opened (another process writes it, or it is in the old local-mode format)."""
    store = config.create_store()
    try:
        if not store.has_collection():
            raise SystemExit(f"error: collection {config.collection!r} does not exist (run the pipeline first)")
        encoder = load_sentence_transformer(resolve_model(model))
        vector = encoder.encode([query], normalize_embeddings=True, show_progress_bar=False)[0].tolist()
        points = store.nearest(vector, top_k)
    finally:
        store.close()
    return [{"score": p.score, **{k: (p.payload or {}).get(k) for k in ("doc_id", "chunk_index", "version", "text")}}
            for p in points]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("query")
    parser.add_argument("--qdrant_path", default=None, help=f"embedded store folder (default {DEFAULT_PATH})")
    parser.add_argument("--qdrant_url", default=None)
    parser.add_argument("--collection", default="documents")
    parser.add_argument("--qdrant_embedded", choices=("edge", "client"), default="edge",
                        help="the embedded store's engine, as the pipeline wrote it")
    parser.add_argument("--model", default=None, help="the model the pipeline used (default: bundled MiniLM)")
    parser.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
    config = QdrantConfig(path=args.qdrant_path, url=args.qdrant_url, collection=args.collection,
                          embedded=args.qdrant_embedded)
    try:
        hits = search(args.query, config, args.model, args.top_k)
    except StoreConfigError as exc:  # a folder another process writes, or an old-format one: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"query: {args.query}")
    for rank, hit in enumerate(hits, start=1):
        text = " ".join((hit["text"] or "").split())
        print(f"{rank}. score={hit['score']:.3f} doc_id={hit['doc_id']} chunk_index={hit['chunk_index']} "
              f"version={hit['version']}\n   {text[:160]}{'...' if len(text) > 160 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
