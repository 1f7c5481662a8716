"""beam-vector-sync: keep vector stores exactly in sync with changing documents (options, graph, entry).

Importing the package first hides Beam's import-time warnings about optional file systems and BigQuery
clients that a sync does not use ("Failed to import GCSFileSystem ...", "apitools not found ..."): they are
printed before anything else on installs without the `gcp` extra and only confuse a new user. A `gs://`
path still fails with Beam's own clear error when the extra is missing."""
import logging as _logging

_BEAM_IMPORT_NOISE = ("Failed to import GCSFileSystem", "Failed to import S3FileSystem",
                      "Failed to import HadoopFileSystem", "Failed to import BlobStorageFileSystem",
                      "apitools not found")


class _QuietOptionalImports(_logging.Filter):
    def filter(self, record: _logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BEAM_IMPORT_NOISE)


for _name in ("", "apache_beam.io.filesystems"):
    _logging.getLogger(_name).addFilter(_QuietOptionalImports())
