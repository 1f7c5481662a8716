from __future__ import annotations

import io
import json
from pathlib import Path

from pipeline.replay import read_dead_letters, replay
from transforms.types import DeadLetter, SourceRef


def test_dead_letters_replay_as_their_original_change_log_lines(tmp_path: Path):
    bad_line = b'{"doc_id": "a", "op": "upsert", "version": 1, "text": "x"'
    sink_line = b'{"doc_id": "b", "op": "upsert", "version": 2, "text": "y"}'
    letters = [
        DeadLetter.of("parse", ValueError("invalid JSON"), bad_line, SourceRef(system="changelog", position={"line": 1})),
        DeadLetter.of("sink:qdrant", TimeoutError("down"), sink_line, SourceRef(system="changelog"), attempts=5),
        DeadLetter.of("parse", ValueError("not UTF-8"), b"\xff", SourceRef(system="folder", position={"file": "f"})),
    ]
    path = tmp_path / "dead.jsonl"
    path.write_text("".join(letter.model_dump_json() + "\n" for letter in letters))
    out, err = io.StringIO(), io.StringIO()
    assert replay(read_dead_letters(path), out, err) == 2
    assert out.getvalue().splitlines() == [bad_line.decode(), sink_line.decode()]
    assert "re-send from its source: folder file=f" in err.getvalue()

    only_sink = io.StringIO()
    assert replay(read_dead_letters(path), only_sink, io.StringIO(), stage="sink") == 1
    assert json.loads(only_sink.getvalue())["doc_id"] == "b"
