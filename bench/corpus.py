"""A deterministic corpus of documents of mixed lengths (60% short, 30% medium, 10% long)."""
from __future__ import annotations

import json
import random
from pathlib import Path

VOCABULARY = (
    "warehouse pallet forklift shipment invoice customs freight carrier dock aisle shelf barcode scanner "
    "driver route depot container battery refund warranty policy badge laptop security training payroll "
    "manager customer order delivery returns inventory supplier contract price discount schedule truck "
    "maintenance inspection safety helmet gloves storage temperature humidity label package weight volume "
    "the a of to and in for on with is are was were be by at from this that these those it its their "
    "every each all some many few more less new old quick slow early late before after during while"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(6, 18))]
    return " ".join(words).capitalize() + "."


def _text(rng: random.Random, words: int) -> str:
    sentences, count = [], 0
    while count < words:
        sentence = _sentence(rng)
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def make_corpus(n_docs: int, seed: int = 7) -> list[tuple[str, str]]:
    """`(doc_id, text)` pairs; the same arguments always give the same corpus."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        kind = rng.random()
        words = rng.randint(20, 60) if kind < 0.6 else rng.randint(100, 250) if kind < 0.9 else rng.randint(400, 1200)
        docs.append((f"doc-{i:05d}", _text(rng, words)))
    return docs


def changed_corpus(docs: list[tuple[str, str]], fraction: float, seed: int = 11) -> tuple[list[tuple[str, str]], set[str]]:
    """The corpus with `fraction` of the documents edited (one sentence appended), and their IDs."""
    rng = random.Random(seed)
    chosen = set(rng.sample([d for d, _ in docs], max(1, int(len(docs) * fraction))))
    return [(d, t + " " + _sentence(rng) if d in chosen else t) for d, t in docs], chosen


def write_changelog(path: Path, docs: list[tuple[str, str]], version: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for doc_id, text in docs:
            fh.write(json.dumps({"doc_id": doc_id, "op": "upsert", "version": version, "text": text}) + "\n")
    return path
