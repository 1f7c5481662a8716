"""Fixed costs: `--help` and usage errors import nothing heavy (no Beam, torch, sentence-transformers or
store client), checked with `python -X importtime` in a fresh process; a run with nothing to embed never
loads the model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sentence_transformers", "transformers", "apache_beam", "qdrant_client", "qdrant_edge",
         "psycopg", "pymongo", "pinecone", "confluent_kafka", "redis", "google.cloud", "azure")


def _imported_modules(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines (`import time: self | cumulative | name`)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VECTOR_SYNC_FINGERPRINT_CACHE": str(tmp_path / "cache" / "fingerprints.json")}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_nothing_heavy(tmp_path: Path):
    result = _run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--qdrant_path" in result.stdout and "--follow" in result.stdout
    modules = _imported_modules(result.stderr)
    assert "pipeline.flags" in modules  # the check sees real importtime output
    assert _heavy(modules) == []


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "many"], "argument --batch_size: invalid int value: 'many'"),
    (["--sink", "faiss"], "argument --sink: invalid choice: 'faiss'"),
])
def test_a_malformed_flag_is_a_usage_error_before_anything_heavy_is_imported(tmp_path: Path, args: list[str],
                                                                               message: str):
    result = _run_cli(args, tmp_path)
    assert result.returncode == 2 and message in result.stderr and "usage: python -m pipeline" in result.stderr
    assert _heavy(_imported_modules(result.stderr)) == []


def test_a_mistyped_flag_lists_beams_options_once_then_imports_nothing_heavy(tmp_path: Path):
    first = _run_cli(["--batch-size", "8"], tmp_path)
    assert first.returncode == 2 and "error: unknown option --batch-size: did you mean --batch_size?" in first.stderr
    assert list((tmp_path / "cache").glob("beam-options-*.json"))  # Beam's option names, listed once
    again = _run_cli(["--runer=DirectRunner"], tmp_path)
    assert again.returncode == 2 and "did you mean --runner?" in again.stderr
    assert _heavy(_imported_modules(again.stderr)) == []


# A run with nothing to embed: no model load, no torch.

def _sync(args: list[str], tmp_path: Path, summary: str) -> tuple[dict, set[str]]:
    """One whole `python -m pipeline` process into the store under `tmp_path`: its summary and its imports."""
    import json

    result = _run_cli(["--qdrant_path", str(tmp_path / "store"), "--dead_letters", str(tmp_path / "dead.jsonl"),
                       "--summary_json", str(tmp_path / summary), *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / summary).read_text()), _imported_modules(result.stderr)


MODEL_LIBRARIES = ("torch", "sentence_transformers", "transformers")


def test_a_run_with_nothing_to_embed_neither_loads_the_model_nor_imports_torch(tmp_path: Path):
    from tests.conftest import write_changelog

    first, imported = _sync([], tmp_path, "first.json")  # the shipped sample into a fresh store
    assert first["chunks_embedded"] == 5 and first["model_loads"] == 1 and "torch" in imported
    again, imported = _sync([], tmp_path, "again.json")  # all in sync
    assert (again["events_in_sync"], again["chunks_embedded"], again["model_loads"]) == (6, 0, 0)
    assert again["accounted"] and [m for m in MODEL_LIBRARIES if m in imported] == []
    deletes = write_changelog(tmp_path / "deletes.jsonl", [
        {"doc_id": "kb/vpn-setup.md", "op": "delete", "version": 9},
        {"doc_id": "faq/returns.md", "op": "delete", "version": 9}, "{not json"])
    gone, imported = _sync(["--input", str(deletes)], tmp_path, "deletes.json")  # deletes and a dead letter
    assert (gone["events_applied"], gone["events_dead_lettered"], gone["model_loads"]) == (2, 1, 0)
    assert gone["vectors_deleted"] > 0 and gone["vectors_in_store"] == 5 - gone["vectors_deleted"]
    assert [m for m in MODEL_LIBRARIES if m in imported] == []


# The chunker without transformers: the very same chunks, or not used.

TRICKY = ["", "   ", "Café naïve résumé ÉCOLE", "東京の倉庫で荷物を積む 2024年",
          "emoji 🚚📦 forklift\u200b zero-width", "tab\tand\r\nnewlines\x00control\x07chars",
          "UPPER lower MiXeD 12,345.67 e-mail: a.b@c.d",
          "https://example.com/path?q=1&r=2#frag", "don't won't o'clock co-op", "ﬁ ligature ﬂ Ⅻ ①"]


def _chunker_texts() -> list[str]:
    import json

    from bench.corpus import make_corpus

    sample = (ROOT / "pipeline" / "sample_data" / "changelog.jsonl").read_text(encoding="utf-8").splitlines()
    texts = []
    for line in sample:
        try:
            texts.append(json.loads(line).get("text") or "")
        except ValueError:
            texts.append(line)
    return texts + TRICKY + [text for _, text in make_corpus(200)]


@pytest.mark.parametrize("chunk_size, overlap", [(None, 32), (16, 4)])
def test_the_tokenizer_file_alone_chunks_exactly_as_transformers_does(model_path: str, chunk_size, overlap):
    from transforms.chunking import TokenChunker, tokenizer_file_is_exact

    assert tokenizer_file_is_exact(model_path)
    alone = TokenChunker.from_model_path(model_path, chunk_size, overlap, tokenizer_file=True)
    full = TokenChunker.from_model_path(model_path, chunk_size, overlap)
    assert alone.chunk_size == full.chunk_size
    for text in _chunker_texts():
        if not text.strip():
            continue
        assert alone.chunks("d", text) == full.chunks("d", text), text[:80]
        assert alone.count_tokens(text) == full.count_tokens(text)


def test_a_tokenizer_config_that_changes_the_tokenizer_keeps_transformers(model_path: str, tmp_path: Path):
    import json
    import shutil

    from transforms.chunking import TokenChunker, tokenizer_file_is_exact

    copy = Path(shutil.copytree(model_path, tmp_path / "model"))
    config = copy / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": False}))
    assert not tokenizer_file_is_exact(copy)
    alone = TokenChunker.from_model_path(copy, 16, 4, tokenizer_file=True)
    full = TokenChunker.from_model_path(copy, 16, 4)
    assert alone.chunks("d", "Hello World of Pallets") != full.chunks("d", "Hello World of Pallets")
    (copy / "tokenizer.json").unlink()
    assert not tokenizer_file_is_exact(copy)


def test_model_facts_are_learnt_once_then_read_by_fingerprint(model_path: str, tmp_path: Path):
    import shutil

    from transforms.model import ModelFacts, model_facts, model_fingerprint

    copy = Path(shutil.copytree(model_path, tmp_path / "model"))
    cache = tmp_path / "facts.json"
    fingerprint = model_fingerprint(str(copy), tmp_path / "fingerprints.json")
    assert model_facts(str(copy), fingerprint, cache) == ModelFacts(dimension=384, tokenizer_file=True)
    shutil.rmtree(copy)  # nothing left to load: the facts can only come from the cache
    assert model_facts(str(copy), fingerprint, cache) == ModelFacts(dimension=384, tokenizer_file=True)
    with pytest.raises(Exception):  # another fingerprint is not in the cache: the model must be loaded
        model_facts(str(copy), fingerprint + "x", cache)


class _Unloadable:
    """A handler whose model cannot be loaded."""

    batch_size = 4

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 4, "max_batch_size": 4}

    def load_model(self):
        raise RuntimeError("model load attempted")

    def run_inference(self, batch, model):
        raise AssertionError("unreachable")


def test_the_model_loads_on_the_first_batch_only():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.embedding import EmbedChunks

    with beam.Pipeline() as p:  # no chunk to embed: the model is never loaded
        embedded = p | beam.Create([]) | EmbedChunks(_Unloadable())
        assert_that(embedded["vectors"], equal_to([]), label="no vectors")
        assert_that(embedded["failures"], equal_to([]), label="no failures")
    with pytest.raises(Exception, match="model load attempted"):  # a chunk: loaded, and its failure fails the job
        with beam.Pipeline() as p:
            _ = p | beam.Create([((("", "d"), 0), ("text", 1))]) | EmbedChunks(_Unloadable())


def test_direct_runner_batches_run_on_the_fn_api_runner_without_trying_prism(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture):
    """DirectRunner would try PrismRunner first (fetching its binary from GitHub) for a graph Prism supports."""
    import logging

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from pipeline.main import direct_batch_runner, run

    assert isinstance(direct_batch_runner(PipelineOptions(["--runner=DirectRunner"])), FnApiRunner)
    assert direct_batch_runner(PipelineOptions(["--runner=DirectRunner", "--streaming"])) is None
    assert direct_batch_runner(PipelineOptions(["--runner=PrismRunner"])) is None
    with caplog.at_level(logging.INFO):
        summary = run(["--qdrant_path", str(tmp_path / "store"), "--dead_letters", str(tmp_path / "dead.jsonl")])
    assert summary.events_applied == 6 and summary.accounted
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]
