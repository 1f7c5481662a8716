"""The model as workers get it: a reference resolved on the worker and checked against the launcher's
fingerprint; a remote folder copied once per machine through Beam's FileSystems; a folder input listed
through FileSystems."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from connectors.changelog import document_files, version_ns
from transforms.embedding import SentenceTransformerHandler
from transforms.model import (
    ModelMismatchError,
    ModelNotFoundError,
    ModelRef,
    fetch_remote_model,
    model_fingerprint,
    resolve_model,
    verified_model_path,
)

OPENED: list[str] = []
ROOT = {"dir": ""}


class FolderBackedFileSystem(LocalFileSystem):
    """`testfs://x/y` is the local `ROOT/x/y`: a remote filesystem as Beam's FileSystems sees one."""

    @classmethod
    def scheme(cls) -> str:
        return "testfs"

    def _local(self, path: str) -> str:
        return os.path.join(ROOT["dir"], path.removeprefix("testfs://"))

    def match(self, patterns: list[str], limits: Any = None) -> list[Any]:
        results = super().match([self._local(p) for p in patterns], limits)
        for result in results:
            result.pattern = result.pattern.replace(ROOT["dir"] + "/", "testfs://", 1)
            for meta in result.metadata_list:
                meta.path = meta.path.replace(ROOT["dir"] + "/", "testfs://", 1)
        return results

    def open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        OPENED.append(path)
        return super().open(self._local(path), *args, **kwargs)


def test_a_worker_refuses_a_model_that_is_not_the_launchers(tmp_path: Path, model_path: str) -> None:
    copy = tmp_path / Path(model_path).name
    shutil.copytree(model_path, copy)
    launched = model_fingerprint(str(copy))
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "extra": 1}', 1))
    with pytest.raises(ModelMismatchError, match="the job was launched with .*refusing to embed"):
        verified_model_path(str(copy), launched)
    handler = SentenceTransformerHandler(ModelRef(str(copy), launched, 384), batch_size=4)
    with pytest.raises(ModelMismatchError):
        handler.load_model()


def test_the_bundled_model_resolves_by_reference_on_the_worker(model_path: str) -> None:
    ref = ModelRef(None, model_fingerprint(model_path), 384)
    assert ref.local_path() == model_path and ref.model_id == ref.fingerprint
    assert ModelRef(None, "m@1", 384, backend="onnx-int8").model_id == "m@1+onnx-int8"


def test_a_folder_missing_on_the_worker_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="must exist on the launcher and on every worker"):
        resolve_model(str(tmp_path / "absent-model"))


def test_a_remote_model_is_copied_once_per_machine_with_its_fingerprint(tmp_path: Path, model_path: str) -> None:
    ROOT["dir"] = str(tmp_path / "bucket")
    shutil.copytree(model_path, tmp_path / "bucket" / "models" / "minilm")
    uri = "testfs://models/minilm"
    OPENED.clear()
    first = fetch_remote_model(uri, tmp_path / "cache")
    opened = len(OPENED)
    assert opened > 0 and fetch_remote_model(uri + "/", tmp_path / "cache") == first
    assert len(OPENED) == opened, "the second resolution copied again"
    assert first.name == "minilm"
    assert model_fingerprint(str(first)) == model_fingerprint(str(tmp_path / "bucket" / "models" / "minilm"))
    with pytest.raises(ModelNotFoundError, match="no file under it"):
        fetch_remote_model("testfs://models/none", tmp_path / "cache")


def test_a_folder_is_listed_through_filesystems_with_hidden_entries_skipped(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("a.md", "sub/b.txt", ".hidden", ".git/config"):
        (tmp_path / name).write_text(name)
    listed = document_files(str(tmp_path) + "/")
    assert [relative for relative, _ in listed] == ["a.md", "sub/b.txt"]
    assert version_ns(listed[0][1]) == (tmp_path / "a.md").stat().st_mtime_ns
