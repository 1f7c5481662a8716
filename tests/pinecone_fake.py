"""A local stand-in for one Pinecone serverless index's data plane (no Pinecone emulator can run here).

Implements the REST endpoints the sink uses, as the real `pinecone` SDK calls them: `POST /vectors/upsert`,
`POST /vectors/delete`, `GET /vectors/fetch`, `GET /vectors/list`, `POST /query` (with Pinecone's metadata
filter language: `$eq $ne $in $nin $gt $gte $lt $lte $exists $and $or`, a bare value meaning `$eq`), `POST
/describe_index_stats`, with Pinecone's documented validation and status codes: 401 without an `Api-Key`,
400 for a wrong dimension, an all-zero dense vector, null or nested metadata values, metadata over 40 KB,
more than 1,000 vectors or IDs per request, a `limit` over 100 on list and a delete by metadata filter
(serverless indexes cannot do that); 413 for an upsert body over 2 MB. `fail_next(path, status, times)`
scripts 429/5xx answers to prove retries. State lives in memory; `vectors(namespace)` reads it back.
"""
from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

MAX_VECTORS_PER_UPSERT = 1000
MAX_IDS_PER_REQUEST = 1000
MAX_UPSERT_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_LIST_LIMIT = 100
MAX_ID_LENGTH = 512
DEFAULT_NAMESPACE = "__default__"


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _check_metadata(vector_id: str, metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise ApiFailure(400, "INVALID_ARGUMENT", f"Metadata of vector {vector_id} must be an object")
    size = len(json.dumps(metadata, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ApiFailure(400, "INVALID_ARGUMENT",
                         f"Metadata size is {size} bytes, which exceeds the limit of {MAX_METADATA_BYTES} bytes "
                         f"per vector")
    for key, value in metadata.items():
        ok = (isinstance(value, (str, bool, int, float)) or
              (isinstance(value, list) and all(isinstance(v, str) for v in value)))
        if not ok:
            raise ApiFailure(400, "INVALID_ARGUMENT",
                             f"Metadata value for field {key!r} must be a string, number, boolean or list of "
                             f"strings, got {type(value).__name__}")


_COMPARE = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b,
            "$lte": lambda a, b: a <= b}


def matches_filter(metadata: dict[str, Any], condition: Any) -> bool:
    """Whether a vector's metadata passes a Pinecone metadata filter (a list value matches `$eq` on an element)."""
    if not isinstance(condition, dict):
        raise ApiFailure(400, "INVALID_ARGUMENT", "filter must be an object")
    for key, expected in condition.items():
        if key in ("$and", "$or"):
            results = [matches_filter(metadata, c) for c in expected]
            if not (all(results) if key == "$and" else any(results)):
                return False
            continue
        operators = expected if isinstance(expected, dict) else {"$eq": expected}
        present = key in metadata
        value = metadata.get(key)
        values = value if isinstance(value, list) else [value]
        for operator, operand in operators.items():
            if operator == "$exists":
                ok = present == bool(operand)
            elif operator in ("$eq", "$ne"):
                ok = present and operand in values
                ok = ok if operator == "$eq" else not ok
            elif operator in ("$in", "$nin"):
                ok = present and any(v in operand for v in values)
                ok = ok if operator == "$in" else not ok
            elif operator in _COMPARE:
                ok = present and isinstance(value, (int, float)) and _COMPARE[operator](value, operand)
            else:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"unknown filter operator {operator}")
            if not ok:
                return False
    return True


def _check_id(vector_id: Any) -> str:
    if not isinstance(vector_id, str) or not vector_id or len(vector_id) > MAX_ID_LENGTH or not vector_id.isascii():
        raise ApiFailure(400, "INVALID_ARGUMENT", f"Invalid vector id {vector_id!r}")
    return vector_id


class FakePineconeIndex:
    """One dense cosine index of `dimension`; `url` is the host to give `Pinecone(...).Index(host=...)`."""

    def __init__(self, dimension: int, api_key: str = "test-key") -> None:
        self.dimension = dimension
        self.api_key = api_key
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = {}
        self._failures: list[tuple[str, int, int]] = []  # (path, status, remaining)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, path: str, status: int, times: int = 1) -> None:
        """The next `times` requests to `path` answer `status` (429 or 5xx) without touching the data."""
        with self._lock:
            self._failures.append((path, status, times))

    def vectors(self, namespace: str = "") -> dict[str, tuple[list[float], dict[str, Any]]]:
        with self._lock:
            return {k: (list(v), dict(m)) for k, (v, m) in self._data.get(namespace, {}).items()}

    def remove(self, namespace: str, ids: list[str]) -> None:
        with self._lock:
            for vector_id in ids:
                self._data.get(namespace, {}).pop(vector_id, None)

    def namespaces(self) -> list[str]:
        with self._lock:
            return sorted(ns for ns, vectors in self._data.items() if vectors)

    # --- request handling -------------------------------------------------------------------------------

    def _scripted_failure(self, path: str) -> Optional[int]:
        with self._lock:
            for i, (p, status, remaining) in enumerate(self._failures):
                if p == path:
                    if remaining <= 1:
                        self._failures.pop(i)
                    else:
                        self._failures[i] = (p, status, remaining - 1)
                    return status
        return None

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
               body: bytes) -> tuple[int, dict[str, Any]]:
        if headers.get("Api-Key") != self.api_key:
            return 401, {"error": {"code": "UNAUTHENTICATED", "message": "Invalid API Key"}, "status": 401}
        status = self._scripted_failure(path)
        if status is not None:
            code = "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE"
            return status, {"error": {"code": code, "message": f"scripted {status}"}, "status": status}
        try:
            if method == "POST" and path == "/vectors/upsert":
                if len(body) > MAX_UPSERT_BYTES:
                    raise ApiFailure(413, "INVALID_ARGUMENT", f"Request size {len(body)} exceeds the maximum "
                                                              f"supported size of {MAX_UPSERT_BYTES} bytes")
                return 200, self._upsert(json.loads(body))
            if method == "POST" and path == "/vectors/delete":
                return 200, self._delete(json.loads(body))
            if method == "GET" and path == "/vectors/fetch":
                return 200, self._fetch(query)
            if method == "GET" and path == "/vectors/list":
                return 200, self._list(query)
            if method == "POST" and path == "/query":
                return 200, self._query(json.loads(body))
            if method == "POST" and path == "/describe_index_stats":
                return 200, self._stats()
            raise ApiFailure(404, "NOT_FOUND", f"no route {method} {path}")
        except ApiFailure as failure:
            return failure.status, {"error": {"code": failure.code, "message": failure.message},
                                    "status": failure.status}

    def _upsert(self, body: dict[str, Any]) -> dict[str, Any]:
        vectors = body.get("vectors") or []
        if len(vectors) > MAX_VECTORS_PER_UPSERT:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Upsert request contains {len(vectors)} vectors, the "
                                                      f"maximum is {MAX_VECTORS_PER_UPSERT}")
        checked = []
        for v in vectors:
            vector_id = _check_id(v.get("id"))
            values = v.get("values") or []
            if len(values) != self.dimension:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"Vector dimension {len(values)} does not match the "
                                                          f"dimension of the index {self.dimension}")
            if not any(values) or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in values):
                raise ApiFailure(400, "INVALID_ARGUMENT",
                                 "Dense vectors must contain at least one non-zero value and only finite numbers")
            _check_metadata(vector_id, v.get("metadata"))
            checked.append((vector_id, [float(x) for x in values], dict(v.get("metadata") or {})))
        with self._lock:
            space = self._data.setdefault(body.get("namespace", ""), {})
            for vector_id, values, metadata in checked:
                space[vector_id] = (values, metadata)
        return {"upsertedCount": len(checked)}

    def _delete(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("filter") is not None:
            raise ApiFailure(400, "INVALID_ARGUMENT",
                             "Serverless and Starter indexes do not support deleting with metadata filtering")
        ids = body.get("ids") or []
        if len(ids) > MAX_IDS_PER_REQUEST:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Delete request contains {len(ids)} ids, the maximum is "
                                                      f"{MAX_IDS_PER_REQUEST}")
        with self._lock:
            space = self._data.setdefault(body.get("namespace", ""), {})
            if body.get("deleteAll"):
                space.clear()
            for vector_id in ids:
                space.pop(_check_id(vector_id), None)
        return {}

    def _fetch(self, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids", [])
        if not ids or len(ids) > MAX_IDS_PER_REQUEST:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Fetch takes 1 to {MAX_IDS_PER_REQUEST} ids, got {len(ids)}")
        namespace = query.get("namespace", [""])[0]
        with self._lock:
            space = self._data.get(namespace, {})
            found = {i: {"id": i, "values": space[i][0], "metadata": space[i][1]} for i in ids if i in space}
        return {"vectors": found, "namespace": namespace, "usage": {"readUnits": 1}}

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = int(query.get("limit", [str(MAX_LIST_LIMIT)])[0])
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"limit must be between 1 and {MAX_LIST_LIMIT}")
        prefix = query.get("prefix", [""])[0]
        namespace = query.get("namespace", [""])[0]
        after = query.get("paginationToken", [""])[0]
        with self._lock:
            ids = sorted(i for i in self._data.get(namespace, {}) if i.startswith(prefix) and i > after)
        page = ids[:limit]
        response: dict[str, Any] = {"vectors": [{"id": i} for i in page], "namespace": namespace,
                                    "usage": {"readUnits": 1}}
        if len(ids) > limit:
            response["pagination"] = {"next": page[-1]}
        return response

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        vector = body.get("vector") or []
        if len(vector) != self.dimension:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Query vector dimension {len(vector)} does not match the "
                                                      f"dimension of the index {self.dimension}")
        namespace = body.get("namespace", "")
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        with self._lock:
            items = list(self._data.get(namespace, {}).items())
        scored = []
        condition = body.get("filter")
        for vector_id, (values, metadata) in items:
            if condition is not None and not matches_filter(metadata, condition):
                continue
            other = math.sqrt(sum(x * x for x in values)) or 1.0
            score = sum(a * b for a, b in zip(vector, values)) / (norm * other)
            match: dict[str, Any] = {"id": vector_id, "score": score}
            if body.get("includeValues"):
                match["values"] = values
            if body.get("includeMetadata"):
                match["metadata"] = metadata
            scored.append(match)
        scored.sort(key=lambda m: -m["score"])
        return {"matches": scored[: int(body.get("topK", 10))], "namespace": namespace}

    def _stats(self) -> dict[str, Any]:
        with self._lock:
            counts = {(ns or DEFAULT_NAMESPACE): {"vectorCount": len(v)} for ns, v in self._data.items() if v}
        return {"namespaces": counts, "dimension": self.dimension, "indexFullness": 0.0,
                "totalVectorCount": sum(c["vectorCount"] for c in counts.values()), "metric": "cosine",
                "vectorType": "dense"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = index.handle(method, url.path, parse_qs(url.query), self.headers, body)
                with index._lock:
                    index.requests.append((method, url.path, status))
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
