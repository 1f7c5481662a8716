"""The whole sync graph, top to bottom: source → parse → latest per document → plan against the store →
embed (RunInference) → assemble → write; every stage's dead letters go to one file."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from connectors.base import DEAD_LETTERS, TO_EMBED, PlanDocumentWrites, StoreConfig, WriteDocuments
from connectors.changelog import ReadChangeLog, ReadDocumentFolder, parse_document_file
from pipeline.options import SyncConfig
from transforms.embedding import EmbedChunks, SentenceTransformerHandler
from transforms.parse import parse_or_dead_letter
from transforms.stages import AssembleDocumentWrites, LatestPerDocument, ParseChangeEvents, WriteDeadLetters


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    model_id: str
    dimension: int


def build_graph(p: beam.Pipeline, config: SyncConfig, model: ResolvedModel, store: StoreConfig) -> beam.PCollection:
    """Adds the sync graph to `p`; returns the applied events (what streaming sources acknowledge)."""
    if config.input_is_folder:
        read = p | "ReadFolder" >> ReadDocumentFolder(config.input)
        parsed = read.records | "Parse" >> ParseChangeEvents(parse_document_file)
    else:
        read = p | "ReadChangeLog" >> ReadChangeLog(config.input)
        parsed = read.records | "Parse" >> ParseChangeEvents(parse_or_dead_letter)
    latest = parsed.events | "LatestPerDocument" >> LatestPerDocument()
    planned = latest | "PlanAgainstStore" >> beam.ParDo(PlanDocumentWrites(
        store, model.path, model.model_id, config.chunk_size, config.chunk_overlap,
        config.lookup_batch_size)).with_outputs(TO_EMBED, DEAD_LETTERS, main="plans")
    embedded = planned[TO_EMBED] | "Embed" >> EmbedChunks(SentenceTransformerHandler(
        model.path, batch_size=config.batch_size, device=config.device))
    assembled = ({"plans": planned.plans, "vectors": embedded["vectors"], "failures": embedded["failures"]}
                 | "AssembleWrites" >> AssembleDocumentWrites(model.model_id, model.dimension))
    written = assembled.writes | f"Write:{store.sink_name}" >> beam.ParDo(
        WriteDocuments(store)).with_outputs(DEAD_LETTERS, main="applied")
    _ = ((read[DEAD_LETTERS], parsed[DEAD_LETTERS], planned[DEAD_LETTERS], assembled[DEAD_LETTERS],
          written[DEAD_LETTERS])
         | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(config.dead_letters))
    return written.applied
