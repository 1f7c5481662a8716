"""The whole sync graph, top to bottom: source → parse → latest per document → plan against every store →
embed (RunInference) → assemble → write to each sink → settle each event; every stage's dead letters go to
one file."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from connectors.base import DEAD_LETTERS, TO_EMBED, PlanDocumentWrites, WriteDocuments
from connectors.changelog import ReadChangeLog, ReadDocumentFolder, parse_document_file
from pipeline.options import SyncConfig
from transforms.embedding import EmbedChunks, SentenceTransformerHandler
from transforms.parse import parse_or_dead_letter
from transforms.stages import (
    AssembleDocumentWrites,
    LatestPerDocument,
    ParseChangeEvents,
    SettleEvents,
    WriteDeadLetters,
    sink_tag,
)


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    model_id: str
    dimension: int


def build_graph(p: beam.Pipeline, config: SyncConfig, model: ResolvedModel) -> beam.PCollection:
    """Adds the sync graph to `p`; returns one settled `SinkOutcome` per written event (applied to every
    sink, or dead-lettered): what streaming sources acknowledge."""
    if config.input_is_folder:
        read = p | "ReadFolder" >> ReadDocumentFolder(config.input)
        parsed = read.records | "Parse" >> ParseChangeEvents(parse_document_file)
    else:
        read = p | "ReadChangeLog" >> ReadChangeLog(config.input)
        parsed = read.records | "Parse" >> ParseChangeEvents(parse_or_dead_letter)
    latest = parsed.events | "LatestPerDocument" >> LatestPerDocument()
    stores = config.stores
    planned = latest | "PlanAgainstStores" >> beam.ParDo(PlanDocumentWrites(
        stores, model.path, model.model_id, config.chunk_size, config.chunk_overlap,
        config.lookup_batch_size)).with_outputs(TO_EMBED, DEAD_LETTERS, main="plans")
    embedded = planned[TO_EMBED] | "Embed" >> EmbedChunks(SentenceTransformerHandler(
        model.path, batch_size=config.batch_size, device=config.device))
    assembled = ({"plans": planned.plans, "vectors": embedded["vectors"], "failures": embedded["failures"]}
                 | "AssembleWrites" >> AssembleDocumentWrites(model.model_id, model.dimension,
                                                              [store.sink_name for store in stores]))
    outcomes, sink_dead_letters = [], []
    for store in stores:
        written = assembled[sink_tag(store.sink_name)] | f"Write:{store.sink_name}" >> beam.ParDo(
            WriteDocuments(store)).with_outputs(DEAD_LETTERS, main="outcomes")
        outcomes.append(written.outcomes)
        sink_dead_letters.append(written[DEAD_LETTERS])
    settled = tuple(outcomes) | "AllSinkOutcomes" >> beam.Flatten() | "SettleEvents" >> SettleEvents()
    _ = ((read[DEAD_LETTERS], parsed[DEAD_LETTERS], planned[DEAD_LETTERS], assembled[DEAD_LETTERS],
          *sink_dead_letters)
         | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(config.dead_letters))
    return settled
