"""Coverage-guided fuzzing of every parser of outside bytes, for runs longer than the suite's hypothesis test
(`tests/test_poison_records.py`): `pip install atheris`, then

    python -m fuzz.parsers -max_total_time=600 [corpus_dir]

A crash is any exception escaping the parse step, an empty result (a record must end as events or a dead
letter), an event some sink could not store, or a dead letter that cannot be written as JSON."""
from __future__ import annotations

import json
import sys

from connectors.changelog import parse_document_file
from connectors.kafka import KafkaConfig, KafkaRecordParser
from transforms.notifications import NotificationParser
from transforms.parse import parse_or_dead_letter
from transforms.stages import _ParseRecords
from transforms.storable import check_metadata, check_string
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

_KAFKA = SourceRef(system="kafka", position={"topic": "t", "partition": 0, "offset": 3, "key": "k"})
PARSERS = [
    (_ParseRecords(parse_or_dead_letter, 100_000), SourceRef(system="changelog", position={"line": 1})),
    (_ParseRecords(NotificationParser("auto"), 100_000), SourceRef(system="changelog", position={"line": 1})),
    (_ParseRecords(KafkaRecordParser(KafkaConfig(bootstrap="127.0.0.1:1", topics=("t",), group="g")), 100_000),
     _KAFKA),
    (_ParseRecords(KafkaRecordParser(KafkaConfig(bootstrap="127.0.0.1:1", topics=("t",), group="g",
                                                 doc_id_field="a.b", text_fields=("text",),
                                                 version_field="version")), 100_000), _KAFKA),
    (_ParseRecords(parse_document_file, 100_000), SourceRef(system="folder", position={"doc_id": "a", "mtime_ns": 1})),
]


def check_one(data: bytes) -> None:
    for step, source in PARSERS:
        outputs = [getattr(o, "value", o) for o in step.process(RawRecord(data, source))]
        if not outputs:
            raise AssertionError("a record ended as nothing")
        for out in outputs:
            if isinstance(out, DeadLetter):
                json.loads(out.model_dump_json())
                continue
            assert isinstance(out, ChangeEvent)
            for value in (out.doc_id, out.namespace, out.text, out.uri):
                if value is not None:
                    check_string(value, "field")
            check_metadata(out.metadata)


def main() -> None:
    import atheris

    atheris.instrument_all()  # coverage of the project's (and pydantic's Python) code guides the mutations
    atheris.Setup(sys.argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
