"""The whole sync graph, top to bottom: source (change-log, folder or stream) → parse (change events or
storage notifications) → latest per document → fetch object content → plan against every store → embed
(batched; the model loads on the first batch) → assemble → write to each sink → settle each event;
every stage's dead letters are appended to the dead-letter file (and the source's own dead-letter place),
and a streaming source acknowledges each record once it is finished: applied, superseded, or its dead letter
durably written.

An unbounded source (streaming runners) runs the same stages in the global window, with the keyed steps
kept by keyed state instead of GroupByKeys (`transforms.ordering`): per-document order, the join of plans
and vectors, the writers' order, settling, and the acknowledgement ledger. Nothing waits for a window to
close and nothing is dropped as late."""
from __future__ import annotations

import apache_beam as beam

from connectors.base import DEAD_LETTERS, TO_EMBED, PlanDocumentWrites, WriteToSink, document_key
from connectors.dead_letters import WriteDeadLetters
from connectors.objects import FetchContent
from connectors.sources import FinishedRecords, FinishedRecordsInState
from connectors.changelog import ReadChangeLog, ReadDocumentFolder, parse_document_file
from pipeline.options import SyncConfig
from transforms.embedding import EmbedChunks, SentenceTransformerHandler
from transforms.model import ModelRef
from transforms.notifications import NotificationParser
from transforms.ordering import AssembleWhenComplete, OrderPerDocument, SettleWhenComplete, flight_key
from transforms.parse import parse_or_dead_letter
from transforms.stages import (
    AssembleDocumentWrites,
    SUPERSEDED,
    LatestPerDocument,
    ParseChangeEvents,
    SettleEvents,
    sink_tag,
)


ResolvedModel = ModelRef
"""The model as the graph carries it: a reference resolved on each worker, the launcher's fingerprint and the
dimension (see `transforms.model.ModelRef`)."""


def build_graph(p: beam.Pipeline, config: SyncConfig, model: ModelRef,
                prepare_on_workers: bool = False) -> beam.PCollection:
    """Adds the sync graph to `p`; returns one settled `SinkOutcome` per written event (applied to every
    sink, dead-lettered, or, streaming, superseded by a newer version a writer already had): what streaming
    sources acknowledge. `prepare_on_workers`: the sinks are made
    ready in the store DoFns' `setup` (remote runners), not by the launcher."""
    prepare = model.dimension if prepare_on_workers else None
    source = config.source
    streaming = source is not None and source.unbounded  # keyed state in the global window, no GroupByKey
    max_bytes = config.fetch.max_document_bytes
    if source is not None:
        read = p | "ReadSource" >> source.read()
        parser = NotificationParser(config.notifications) if config.notifications else source.parser()
        parsed = read.records | "Parse" >> ParseChangeEvents(parser, max_bytes)
    elif config.input_is_folder:
        read = p | "ReadFolder" >> ReadDocumentFolder(config.input, max_bytes)
        parsed = read.records | "Parse" >> ParseChangeEvents(parse_document_file, max_bytes)
    else:
        read = p | "ReadChangeLog" >> ReadChangeLog(config.input, max_bytes)
        parser = NotificationParser(config.notifications) if config.notifications else parse_or_dead_letter
        parsed = read.records | "Parse" >> ParseChangeEvents(parser, max_bytes)
    latest = parsed.events | "LatestPerDocument" >> (OrderPerDocument() if streaming else LatestPerDocument())
    stores = config.stores
    fetched = latest.winners | "FetchContent" >> beam.ParDo(FetchContent(config.fetch)).with_outputs(
        SUPERSEDED, DEAD_LETTERS, main="events")
    planned = fetched.events | "PlanAgainstStores" >> beam.ParDo(PlanDocumentWrites(
        stores, model, model.model_id, config.chunk_size, config.chunk_overlap,
        config.lookup_batch_size, prepare_dimension=prepare, key_of=flight_key if streaming else document_key,
    )).with_outputs(TO_EMBED, SUPERSEDED, DEAD_LETTERS, main="plans")
    embedded = planned[TO_EMBED] | "Embed" >> EmbedChunks(SentenceTransformerHandler(
        model, batch_size=config.batch_size, device=config.device,
        call_cost_tokens=config.call_cost_tokens))
    assemble = AssembleWhenComplete if streaming else AssembleDocumentWrites
    assembled = ({"plans": planned.plans, "vectors": embedded["vectors"], "failures": embedded["failures"]}
                 | "AssembleWrites" >> assemble(model.model_id, model.dimension, [store.sink_name for store in stores]))
    outcomes, sink_dead_letters = [], []
    for store in stores:  # streaming: each document's writes in order, by keyed state
        written = assembled[sink_tag(store.sink_name)] | f"Write:{store.sink_name}" >> WriteToSink(
            store, prepare, in_order=streaming)
        outcomes.append(written.outcomes)
        sink_dead_letters.append(written[DEAD_LETTERS])
    settled = (tuple(outcomes) | "AllSinkOutcomes" >> beam.Flatten()
               | "SettleEvents" >> (SettleWhenComplete() if streaming else SettleEvents()))
    dead_letters = ((read[DEAD_LETTERS], parsed[DEAD_LETTERS], fetched[DEAD_LETTERS], planned[DEAD_LETTERS],
                     assembled[DEAD_LETTERS],
                     *sink_dead_letters) | "AllDeadLetters" >> beam.Flatten())
    durable = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(config.dead_letters)
    source_dead_letters = source.dead_letter_sink() if source is not None else None
    if source_dead_letters is not None:
        durable = durable | "SourceDeadLetters" >> source_dead_letters
    acknowledge = source.acknowledge() if source is not None else None
    if acknowledge is not None:  # every record read ends here once applied, superseded or dead-lettered
        done = ((settled | "Applied" >> beam.Filter(lambda o: o.applied or o.superseded)
                 | "AppliedRefs" >> beam.Map(lambda o: o.event.source),
                 latest[SUPERSEDED] | "LatestLoserRefs" >> beam.Map(lambda e: e.source),
                 fetched[SUPERSEDED] | "ObjectGoneRefs" >> beam.Map(lambda e: e.source),
                 planned[SUPERSEDED] | "PlannedSupersededRefs" >> beam.Map(lambda e: e.source),
                 durable | "DeadLetterRefs" >> beam.Map(lambda d: d.source))
                | "AllFinished" >> beam.Flatten()
                | "WithSource" >> beam.Filter(lambda ref: ref is not None)
                | "WholeRecords" >> (FinishedRecordsInState() if streaming else FinishedRecords()))
        _ = ({"done": done, "read": read.records | "ReadRefs" >> beam.Map(lambda r: r.source)}
             | "Acknowledge" >> acknowledge)
    return settled
