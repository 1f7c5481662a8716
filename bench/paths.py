"""One measured path per process (so peak memory is per path): `python -m bench.paths PATH --docs N --work DIR`.

Prints one JSON line: path, chunks, tokens, seconds, peak_rss_mib and path-specific figures."""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import changed_corpus, make_corpus, write_changelog
from transforms.chunking import TokenChunker
from transforms.model import force_offline, load_sentence_transformer, resolve_model


def corpus_chunks(docs: list[tuple[str, str]], model_path: str) -> list[tuple[str, int]]:
    chunker = TokenChunker.from_model_path(model_path)
    return [(c.text, c.token_count) for doc_id, text in docs for c in chunker.chunks(doc_id, text)]


def raw_encode(docs, model_path: str, batch_size: int, work: Path) -> dict:
    """`SentenceTransformer.encode` over all chunk texts at once (it sorts by length): the hardware limit."""
    chunks = corpus_chunks(docs, model_path)
    model = load_sentence_transformer(model_path)
    model.encode([t for t, _ in chunks[:batch_size]], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    model.encode([t for t, _ in chunks], batch_size=batch_size, show_progress_bar=False)
    return {"chunks": len(chunks), "tokens": sum(n for _, n in chunks), "seconds": time.perf_counter() - started}


def onnx_raw_encode(docs, model_path: str, batch_size: int, work: Path) -> dict:
    """The int8 ONNX backend's encoder over the same chunks (sorted by length, like `encode`), and its
    fidelity: mean and minimum cosine to the fp32 torch vectors over the first 512 chunks."""
    import numpy as np

    from transforms.onnx_int8 import OnnxInt8Encoder, ensure_int8_model

    chunks = corpus_chunks(docs, model_path)
    texts = [t for t, _ in chunks]
    encoder = OnnxInt8Encoder(ensure_int8_model(model_path, work / "onnx"))
    encoder.encode(texts[:batch_size])  # warm-up
    order = sorted(range(len(texts)), key=lambda i: chunks[i][1])
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        encoder.encode([texts[i] for i in order[start:start + batch_size]])
    seconds = time.perf_counter() - started
    sample = texts[:512]
    reference = load_sentence_transformer(model_path).encode(sample, batch_size=batch_size, normalize_embeddings=True)
    vectors = np.concatenate([encoder.encode(sample[i:i + batch_size]) for i in range(0, len(sample), batch_size)])
    cosines = np.sum(reference * vectors, axis=1)
    return {"chunks": len(chunks), "tokens": sum(n for _, n in chunks), "seconds": seconds,
            "mean_cosine_to_fp32": round(float(cosines.mean()), 4), "min_cosine_to_fp32": round(float(cosines.min()), 4)}


def pipeline_run(docs, model_path: str, batch_size: int, work: Path, version: int = 1, store: str = "store",
                 extra: tuple[str, ...] = ()) -> dict:
    from pipeline.main import run

    import sentence_transformers  # noqa: F401 - imported before the clock, as the raw path's model is loaded
    log = write_changelog(work / f"changelog-v{version}.jsonl", docs, version)
    summary = run(["--input", str(log), "--qdrant_path", str(work / store), "--batch_size", str(batch_size),
                   "--dead_letters", str(work / "dead.jsonl"), "--model", model_path, *extra])
    return {"chunks": summary.chunks_embedded, "tokens": summary.tokens_embedded, "seconds": summary.wall_seconds,
            "chunks_skipped": summary.chunks_skipped, "padding_fraction": round(summary.padding_fraction, 4),
            "accounted": summary.accounted}


def pipeline_full(docs, model_path, batch_size, work) -> dict:
    """The pipeline end to end on DirectRunner into a fresh embedded store (model load included)."""
    return pipeline_run(docs, model_path, batch_size, work)


def pipeline_client(docs, model_path, batch_size, work) -> dict:
    """As `pipeline`, into qdrant-client's local mode (`--qdrant_embedded client`) instead of Qdrant Edge."""
    return pipeline_run(docs, model_path, batch_size, work, store="store-client",
                        extra=("--qdrant_embedded", "client"))


def pipeline_onnx(docs, model_path, batch_size, work) -> dict:
    """The pipeline end to end with `--backend onnx-int8` into a fresh store (the export is cached first)."""
    from transforms.onnx_int8 import ensure_int8_model

    ensure_int8_model(model_path, work / "onnx")
    return pipeline_run(docs, model_path, batch_size, work, store="store-onnx",
                        extra=("--backend", "onnx-int8", "--onnx_cache", str(work / "onnx")))


def resync(docs, model_path, batch_size, work) -> dict:
    """Every document again at version 2 (as after a folder re-scan) with 5% of them edited, against the
    store `pipeline_full` left in `work`."""
    if not (work / "store").exists():
        pipeline_run(docs, model_path, batch_size, work)
    edited, _ = changed_corpus(docs, 0.05)
    return pipeline_run(edited, model_path, batch_size, work, version=2)


def mltransform(docs, model_path, batch_size, work) -> dict:
    """Beam's own MLTransform + SentenceTransformerEmbeddings over the same chunk texts."""
    import apache_beam as beam
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.huggingface import SentenceTransformerEmbeddings

    chunks = corpus_chunks(docs, model_path)
    started = time.perf_counter()
    with beam.Pipeline() as p:
        _ = (p | beam.Create([{"text": t} for t, _ in chunks])
             | MLTransform(write_artifact_location=tempfile.mkdtemp(dir=work)).with_transform(
                 SentenceTransformerEmbeddings(model_name=model_path, columns=["text"], max_batch_size=batch_size))
             | beam.combiners.Count.Globally())
    return {"chunks": len(chunks), "tokens": sum(n for _, n in chunks), "seconds": time.perf_counter() - started}


PATHS = {"raw": raw_encode, "pipeline": pipeline_full, "pipeline-client": pipeline_client, "resync": resync, "mltransform": mltransform,
         "onnx-raw": onnx_raw_encode, "pipeline-onnx": pipeline_onnx}


def model_folder(choice: str, work: Path) -> str:
    if choice == "bundled":
        return str(resolve_model(None))
    if choice == "tiny":
        from bench.tiny_model import build_tiny_model

        return str(build_tiny_model(work.parent / "tiny-model"))
    return choice


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="bundled", help="'bundled' (all-MiniLM-L6-v2), 'tiny' (bench/tiny_model.py, "
                        "built in the work folder's parent) or a model folder")
    args = parser.parse_args()
    force_offline()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = PATHS[args.path](make_corpus(args.docs), model_folder(args.model, work), args.batch_size, work)
    result.update(path=args.path, batch_size=args.batch_size,
                  peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
