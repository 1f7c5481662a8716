"""The operator's view of a running sync: `GET /metrics` (Prometheus text format) and `GET /ready` on one
port, served from a daemon thread for the life of the process (every `--follow` run included).

`/metrics` shows this process's live totals (transforms/counters.py) as `vector_sync_<name>_total`
counters (per sink with a `sink` label), sink write latency as a summary, and the source's backlog per
partition or stream where the source can tell it cheaply (`vector_sync_source_backlog`, refreshed at most
every `backlog_every_s`). `/ready` answers 200 once the sinks and the source were reached, 503 (with the
reason) before that and while a `--follow` run cannot start."""
from __future__ import annotations

import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from transforms import counters

log = logging.getLogger(__name__)

Backlog = Callable[[], dict[tuple[tuple[str, str], ...], int]]
"""Label pairs -> records not yet acknowledged (e.g. `(("topic", "docs"), ("partition", "0"))`)."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HELP = {
    counters.RECORDS_READ: "input records read",
    counters.RECORDS_ACKNOWLEDGED: "records acknowledged to the source",
    counters.EVENTS_APPLIED: "events applied to every sink",
    counters.EVENTS_IN_SYNC: "events applied that the stores already held",
    counters.EVENTS_SUPERSEDED: "events older than what the stores hold (not written)",
    counters.EVENTS_DEAD_LETTERED: "events dead-lettered",
    counters.DEAD_LETTERS: "dead-letter records written",
    counters.CHUNKS_EMBEDDED: "chunks embedded by the model",
    counters.CHUNKS_SKIPPED: "chunks whose stored vector was reused",
    counters.TOKENS_EMBEDDED: "tokens embedded",
    counters.VECTORS_UPSERTED: "vectors upserted",
    counters.VECTORS_DELETED: "vectors deleted",
    counters.SINK_RETRIES: "store writes retried",
    "inputs_skipped": "inputs that are neither a change nor an error (an unsupported file type, a test event)",
}


def _metric_name(name: str) -> str:
    return "vector_sync_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs) + "}" if pairs else ""


def render(backlog: Optional[dict[tuple[tuple[str, str], ...], int]] = None) -> str:
    """The live totals (and `backlog`) in Prometheus' text format."""
    totals = counters.live_totals()
    series: dict[str, list[str]] = {}
    for (namespace, name), value in sorted(totals["counters"].items()):
        if namespace == counters.SKIPPED_NAMESPACE:
            name, labels = "inputs_skipped", (("reason", name),)
        elif namespace == counters.NAMESPACE:
            labels = ()
        else:
            labels = (("sink", namespace.removeprefix("sink:")),)
        series.setdefault(_metric_name(name) + "_total", []).append(f"{_labels(labels)} {value}")
    lines = []
    for metric, samples in series.items():
        help_text = HELP.get(metric.removeprefix("vector_sync_").removesuffix("_total"), metric)
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        lines += [metric + sample for sample in samples]
    latency = [(ns.removeprefix("sink:"), v) for (ns, name), v in sorted(totals["distributions"].items())
               if name == counters.SINK_WRITE_LATENCY_MS]
    if latency:
        metric = _metric_name("sink_write_latency_ms")
        lines += [f"# HELP {metric} milliseconds per store write (a batch, retries included)",
                  f"# TYPE {metric} summary"]
        for sink, (count, total, _) in latency:
            lines += [f'{metric}_count{{sink="{sink}"}} {count}', f'{metric}_sum{{sink="{sink}"}} {total}']
    if backlog:
        metric = _metric_name("source_backlog")
        lines += [f"# HELP {metric} records the source holds that are not acknowledged yet",
                  f"# TYPE {metric} gauge"]
        lines += [f"{metric}{_labels(labels)} {value}" for labels, value in sorted(backlog.items())]
    return "\n".join(lines) + "\n"


class MetricsEndpoint:
    """`/metrics` and `/ready` on `host:port` (port 0: any free port, see `port`)."""

    def __init__(self, port: int, host: str = "127.0.0.1", backlog: Optional[Backlog] = None,
                 backlog_every_s: float = 5.0) -> None:
        self._ready: Optional[bool] = None
        self._reason = "starting: the sinks and the source have not been reached yet"
        self._backlog, self._backlog_every_s = backlog, backlog_every_s
        self._backlog_cache: tuple[float, dict[tuple[tuple[str, str], ...], int]] = (0.0, {})
        self._lock = threading.Lock()
        self._backlog_lock = threading.Lock()  # one backlog question at a time; readiness never waits on it
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, render(endpoint.backlog()))
                elif path == "/ready":
                    ready, reason = endpoint.readiness()
                    self._answer(200 if ready else 503, "ready\n" if ready else f"not ready: {reason}\n")
                else:
                    self._answer(404, "not found: /metrics or /ready\n")

            def _answer(self, status: int, body: str) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet per request
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-endpoint", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def set_backlog(self, backlog: Optional[Backlog]) -> None:
        """Where `/metrics` asks for the source's backlog from now on (None: no backlog shown)."""
        with self._backlog_lock:
            self._backlog, self._backlog_cache = backlog, (0.0, {})

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self._ready, self._reason = ready, reason

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            return bool(self._ready), self._reason

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """The source's backlog, asked at most every `backlog_every_s` (an error shows as no backlog)."""
        if self._backlog is None:
            return {}
        with self._backlog_lock:
            asked, found = self._backlog_cache
            if time.monotonic() - asked < self._backlog_every_s:
                return found
            try:
                found = self._backlog()
            except Exception as exc:  # noqa: BLE001 - a metrics scrape never fails on the source
                log.warning("source backlog unavailable: %s: %s", type(exc).__name__, exc)
                found = {}
            self._backlog_cache = (time.monotonic(), found)
            return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
