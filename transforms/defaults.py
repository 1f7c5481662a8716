"""Defaults that `--help` shows, in a module that imports nothing heavy (no Beam, no model library), so the
help text and usage errors come at once; the modules that use them import them from here."""
from __future__ import annotations

from pathlib import Path

SAMPLE_CHANGELOG = Path(__file__).resolve().parent.parent / "pipeline" / "sample_data" / "changelog.jsonl"
"""The shipped sample, the default `--input` (package data: each worker reads its own installed copy)."""
DEFAULT_QDRANT_PATH = "./.vector_store"
"""The embedded Qdrant store's folder when neither `--qdrant_path` nor `--qdrant_url` is given."""
DEFAULT_CHUNK_OVERLAP = 32
"""Tokens shared by neighbouring chunks."""
DEFAULT_CALL_COST_TOKENS = 512
"""What one extra model call is taken to cost, in padded token slots, when a batch is split by length."""
