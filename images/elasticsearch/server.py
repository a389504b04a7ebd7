#!/usr/bin/env python3
"""A small stand-in for Elasticsearch: an honest subset of its REST API on port 9200.

Why a stand-in: no container registry can be reached, and what the cluster tests need from
"Elasticsearch" is a stateful service whose data lives in a volume (/var/lib/elasticsearch)
and must survive being moved from node to node. Like Elasticsearch's translog, every write
is a JSON line appended to its index's log and fsynced before the request is answered, so a
copy of the directory taken after the server stopped holds every acknowledged write. (It was
one file per document: a volume then held as many files as documents, which no real
Elasticsearch does, and a move's phase 2 and verification, which look at every file, grew
with the writes made during phase 1 rather than with the volume.)

Supported (Elasticsearch 7 shapes):
  GET|HEAD /                                  cluster info with "tagline"
  GET /_cluster/health                        {"status": "green", ...}
  PUT /{index}                                create an index
  DELETE /{index}                             delete an index
  PUT|POST /{index}/_doc/{id}                 201 "created" or 200 "updated"
  POST /{index}/_doc                          201 with an automatic id
  GET|HEAD /{index}/_doc/{id}                 found:true with _source, or 404 found:false
  DELETE /{index}/_doc/{id}                   200 "deleted" or 404 "not_found"
  GET|POST /{index}/_search, /_search         q=field:value | q=value, or a JSON body with
                                              {"query": {"match": {field: value}}} or match_all;
                                              size (default 10, max 10000) and from
  GET|POST /{index}/_count, /_count           {"count": N}
  POST /{index}/_refresh, /_refresh           no-op: writes are visible once acknowledged
{index} may be a comma-separated list, a wildcard pattern, "_all" or "*".
Hits come back in the order documents were first written (there is no scoring).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DATA_DIR = os.environ.get("ES_DATA_DIR", "/var/lib/elasticsearch")
PORT = int(os.environ.get("ES_PORT", "9200"))
LOG_REQUESTS = os.environ.get("ES_LOG_REQUESTS", "") == "1"
MAX_RESULT_WINDOW = 10000
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,254}$")
TOKEN = re.compile(r"\w+", re.UNICODE)

Json = dict[str, Any]


def log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat()} elasticsearch-standin: {message}", file=sys.stderr, flush=True)


class ApiError(Exception):
    """An error answered with Elasticsearch's error body shape."""

    def __init__(self, status: int, kind: str, reason: str, extra: Json | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.body: Json = {
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason, **(extra or {})},
            "status": status,
        }


def _line(op: Json) -> bytes:
    return json.dumps(op, ensure_ascii=False).encode() + b"\n"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


LOG = "translog.jsonl"
DOCUMENT_KEYS = {"_source", "_version", "_seq_no"}  # what the log keeps of a document


class Store:
    """All documents, in memory for queries and in one append-only log per index for
    durability, under one lock.

    One lock for everything keeps concurrent writers and readers trivially consistent; a
    write holds it for one fsync, which is plenty for a test stand-in. A log with more
    superseded lines than live documents is rewritten when the server starts.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.indices: dict[str, dict[str, Json]] = {}  # index -> id -> {"_source", "_version", "_seq_no"}
        self.logs: dict[str, Any] = {}  # index -> its log, open for appending
        self.seq_no = 0
        self._load()

    def _index_dir(self, index: str) -> str:
        return os.path.join(self.root, "indices", index)

    def _load(self) -> None:
        base = os.path.join(self.root, "indices")
        os.makedirs(base, exist_ok=True)
        count = 0
        for index in sorted(os.listdir(base)):
            directory = os.path.join(base, index)
            if not os.path.isdir(directory):
                continue
            docs, lines = self._replay(os.path.join(directory, LOG))
            legacy = self._legacy_files(directory)
            self.indices[index] = {**legacy, **docs}
            if legacy or lines > 2 * len(docs) + 100:
                self._rewrite(index)
                for name in os.listdir(directory):
                    if name.endswith(".json") and name != LOG:  # now in the log
                        os.unlink(os.path.join(directory, name))
            count += len(docs)
        # Keep first-write order across restarts; seq_no continues after the highest seen.
        for docs in self.indices.values():
            for doc in docs.values():
                self.seq_no = max(self.seq_no, int(doc["_seq_no"]) + 1)
        log(f"loaded {count} documents in {len(self.indices)} indices from {self.root}")

    @staticmethod
    def _replay(path: str) -> tuple[dict[str, Json], int]:
        """The documents a log leaves, and its number of lines. A last line without its
        newline is a write a crash interrupted (never acknowledged): it is cut off."""
        docs: dict[str, Json] = {}
        if not os.path.exists(path):
            return docs, 0
        with open(path, "rb") as f:
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            log(f"{path}: cutting off an interrupted write of {len(data) - len(complete)} bytes")
            with open(path, "r+b") as f:
                f.truncate(len(complete))
                os.fsync(f.fileno())
        lines = complete.splitlines()
        # The whole log as one JSON array first: the stand-in exists to start in milliseconds,
        # and line by line 17,000 documents (the writes of a 4 GB move's phase 1) took 70 ms,
        # a fifth of that move's downtime; as one array (and no copy per document) 33 ms.
        try:
            for op in json.loads(b"[" + b",".join(lines) + b"]"):
                Store._apply(docs, op)
            return docs, len(lines)
        except (ValueError, KeyError, TypeError):
            docs.clear()
        for number, line in enumerate(lines, 1):
            try:
                Store._apply(docs, json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                log(f"{path}:{number}: skipping an unreadable line: {e}")
        return docs, len(lines)

    @staticmethod
    def _apply(docs: dict[str, Json], op: Json) -> None:
        """One line of the log: the op's own dict becomes the document (no copy: 17 ms less
        for 17,000), once it holds exactly what a document does."""
        kind, doc_id = op.pop("op"), op.pop("_id")
        if kind == "delete":
            docs.pop(doc_id, None)
        elif op.keys() == DOCUMENT_KEYS:
            docs[doc_id] = op
        else:
            raise KeyError(f"a document with {sorted(op)}")

    @staticmethod
    def _legacy_files(directory: str) -> dict[str, Json]:
        """Documents of the one-file-per-document layout of earlier versions."""
        docs: dict[str, Json] = {}
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # a write or a rewrite interrupted by a crash (the log is intact)
            elif name.endswith(".json"):
                try:
                    with open(path, encoding="utf-8") as f:
                        record = json.load(f)
                    docs[record["_id"]] = {k: record[k] for k in ("_source", "_version", "_seq_no")}
                except (OSError, ValueError, KeyError) as e:
                    log(f"skipping unreadable document file {path}: {e}")
        return docs

    def _rewrite(self, index: str) -> None:
        """The log of ``index`` as one line per live document (temp file, fsync, rename)."""
        path = os.path.join(self._index_dir(index), LOG)
        with open(f"{path}.tmp", "wb") as f:
            for doc_id, doc in self.indices[index].items():
                f.write(_line({"op": "put", "_id": doc_id, **doc}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)
        _fsync_dir(self._index_dir(index))

    def _append_locked(self, index: str, op: Json) -> None:
        f = self.logs.get(index)
        if f is None:
            f = self.logs[index] = open(os.path.join(self._index_dir(index), LOG), "ab")  # noqa: SIM115 (kept open)
        f.write(_line(op))
        f.flush()
        os.fsync(f.fileno())

    def _ensure_index_locked(self, index: str) -> dict[str, Json]:
        if index not in self.indices:
            directory = self._index_dir(index)
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, LOG), "ab") as f:
                os.fsync(f.fileno())
            _fsync_dir(directory)
            _fsync_dir(os.path.dirname(directory))
            self.indices[index] = {}
        return self.indices[index]

    def create_index(self, index: str) -> bool:
        with self.lock:
            if index in self.indices:
                return False
            self._ensure_index_locked(index)
            return True

    def delete_index(self, index: str) -> bool:
        with self.lock:
            if index not in self.indices:
                return False
            f = self.logs.pop(index, None)
            if f is not None:
                f.close()
            directory = self._index_dir(index)
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)
            _fsync_dir(os.path.dirname(directory))
            del self.indices[index]
            return True

    def put(self, index: str, doc_id: str, source: Json) -> Json:
        with self.lock:
            docs = self._ensure_index_locked(index)
            old = docs.get(doc_id)
            version = (int(old["_version"]) + 1) if old else 1
            seq_no = int(old["_seq_no"]) if old else self.seq_no
            self._append_locked(index, {"op": "put", "_id": doc_id, "_source": source, "_version": version, "_seq_no": seq_no})
            docs[doc_id] = {"_source": source, "_version": version, "_seq_no": seq_no}
            if not old:
                self.seq_no += 1
            return {"result": "updated" if old else "created", "_version": version, "_seq_no": seq_no}

    def get(self, index: str, doc_id: str) -> Json | None:
        with self.lock:
            doc = self.indices.get(index, {}).get(doc_id)
            return dict(doc) if doc else None

    def delete(self, index: str, doc_id: str) -> Json | None:
        with self.lock:
            docs = self.indices.get(index, {})
            doc = docs.get(doc_id)
            if doc is None:
                return None
            self._append_locked(index, {"op": "delete", "_id": doc_id})
            del docs[doc_id]
            return doc

    def close(self) -> None:
        with self.lock:  # a write in progress finishes first
            for f in self.logs.values():
                f.close()
            self.logs.clear()

    def resolve(self, expression: str | None) -> list[str]:
        """Index names for an index expression; 404 for a named index that does not exist."""
        with self.lock:
            names = sorted(self.indices)
        if expression in (None, "", "_all", "*"):
            return names
        found: list[str] = []
        for part in expression.split(","):
            if any(c in part for c in "*?["):
                found.extend(n for n in names if fnmatch.fnmatchcase(n, part) and n not in found)
            elif part in names:
                if part not in found:
                    found.append(part)
            else:
                raise ApiError(
                    404,
                    "index_not_found_exception",
                    f"no such index [{part}]",
                    {"index": part, "resource.type": "index_or_alias", "resource.id": part},
                )
        return found

    def matching(self, indices: list[str], query: Json | None) -> list[tuple[str, str, Json]]:
        """(index, id, source) of matching documents, in first-write order."""
        with self.lock:
            rows = [
                (doc["_seq_no"], index, doc_id, doc["_source"]) for index in indices for doc_id, doc in self.indices.get(index, {}).items()
            ]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [(index, doc_id, source) for _, index, doc_id, source in rows if _matches(source, query)]


def _field_values(source: Any, field: str) -> list[Any]:
    if field in ("*", "_all", ""):
        return _all_values(source)
    value: Any = source
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    return _all_values(value)


def _all_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _all_values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _all_values(item)]
    return [value]


def _text_match(values: list[Any], wanted: Any) -> bool:
    # Like a "match" query on an analysed text field with the default OR operator: any
    # lower-cased word of the query among the words of the field. Non-strings compare equal.
    if not isinstance(wanted, str):
        return any(v == wanted for v in values)
    wanted_tokens = set(TOKEN.findall(wanted.lower()))
    if not wanted_tokens:
        return False
    for v in values:
        text = v if isinstance(v, str) else json.dumps(v)
        if wanted_tokens & set(TOKEN.findall(text.lower())):
            return True
    return False


def _matches(source: Json, query: Json | None) -> bool:
    if not query or "match_all" in query:
        return True
    if "match" in query:
        clause = query["match"]
        if not isinstance(clause, dict) or len(clause) != 1:
            raise ApiError(400, "parsing_exception", "[match] query expects one field")
        field, wanted = next(iter(clause.items()))
        if isinstance(wanted, dict):
            wanted = wanted.get("query")
        return _text_match(_field_values(source, field), wanted)
    if "term" in query:
        clause = query["term"]
        if not isinstance(clause, dict) or len(clause) != 1:
            raise ApiError(400, "parsing_exception", "[term] query expects one field")
        field, wanted = next(iter(clause.items()))
        if isinstance(wanted, dict):
            wanted = wanted.get("value")
        return wanted in _field_values(source, field)
    if "query_string" in query:
        return _matches(source, _query_from_q(str(query["query_string"].get("query", ""))))
    raise ApiError(400, "parsing_exception", f"unsupported query type(s): {sorted(query)}")


def _query_from_q(q: str) -> Json | None:
    q = q.strip()
    if q in ("", "*", "*:*"):
        return None
    field, sep, value = q.partition(":")
    if sep and field and " " not in field:
        return {"match": {field: value.strip('"')}}
    return {"match": {"*": q.strip('"')}}


SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}


class Handler(BaseHTTPRequestHandler):
    server_version = "elasticsearch-standin/1.0"
    store: Store  # set on the class before serving

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if LOG_REQUESTS:
            log(f"{self.client_address[0]} {format % args}")

    # --- plumbing

    def _send(self, status: int, body: Json | None, head_only: bool = False) -> None:
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only and self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> Json | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return None
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "parse_exception", f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "parse_exception", "request body must be a JSON object")
        return body

    def _dispatch(self) -> None:
        try:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            status, body = self._route(self.command, parts, params)
            self._send(status, body)
        except ApiError as e:
            self._send(e.status, e.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug must answer 500, not drop the connection
            log(f"internal error on {self.command} {self.path}: {e!r}")
            self._send(500, ApiError(500, "exception", str(e)).body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch

    # --- API

    def _route(self, method: str, parts: list[str], params: dict[str, str]) -> tuple[int, Json | None]:
        store = self.store
        if not parts:
            if method in ("GET", "HEAD"):
                return 200, _cluster_info()
            raise ApiError(405, "method_not_allowed", f"{method} not allowed on /")
        if parts == ["_cluster", "health"]:
            return 200, {
                "cluster_name": "flocker-standin",
                "status": "green",
                "timed_out": False,
                "number_of_nodes": 1,
                "number_of_data_nodes": 1,
            }
        if parts[0] in ("_search", "_count", "_refresh"):
            parts = ["_all", *parts]
        index_expr, rest = parts[0], parts[1:]

        if rest and rest[0] == "_search" and len(rest) == 1 and method in ("GET", "POST"):
            return 200, self._search(index_expr, params)
        if rest and rest[0] == "_count" and len(rest) == 1 and method in ("GET", "POST"):
            indices = store.resolve(index_expr)
            query = self._query(params)
            return 200, {"count": len(store.matching(indices, query)), "_shards": SHARDS}
        if rest and rest[0] == "_refresh" and len(rest) == 1 and method in ("GET", "POST"):
            store.resolve(index_expr)
            return 200, {"_shards": SHARDS}

        if index_expr.startswith("_"):
            raise ApiError(400, "invalid_index_name_exception", f"unsupported endpoint /{'/'.join(parts)}")
        index = index_expr
        if not rest:
            if method == "PUT":
                _check_index_name(index)
                self._body()
                if not store.create_index(index):
                    raise ApiError(400, "resource_already_exists_exception", f"index [{index}] already exists")
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
            if method == "DELETE":
                if not store.delete_index(index):
                    store.resolve(index)  # raises the 404
                return 200, {"acknowledged": True}
            if method in ("GET", "HEAD"):
                store.resolve(index)
                return 200, {index: {"aliases": {}, "mappings": {}, "settings": {}}}
        if rest and rest[0] == "_doc":
            if len(rest) == 1 and method == "POST":
                return self._put(index, secrets.token_urlsafe(15))
            if len(rest) == 2:
                doc_id = rest[1]
                if method in ("PUT", "POST"):
                    return self._put(index, doc_id)
                if method in ("GET", "HEAD"):
                    doc = store.get(index, doc_id)
                    if doc is None:
                        return 404, {"_index": index, "_type": "_doc", "_id": doc_id, "found": False}
                    return 200, {
                        "_index": index,
                        "_type": "_doc",
                        "_id": doc_id,
                        "_version": doc["_version"],
                        "_seq_no": doc["_seq_no"],
                        "_primary_term": 1,
                        "found": True,
                        "_source": doc["_source"],
                    }
                if method == "DELETE":
                    doc = store.delete(index, doc_id)
                    if doc is None:
                        return 404, {"_index": index, "_type": "_doc", "_id": doc_id, "result": "not_found", "_shards": SHARDS}
                    return 200, {
                        "_index": index,
                        "_type": "_doc",
                        "_id": doc_id,
                        "_version": doc["_version"] + 1,
                        "result": "deleted",
                        "_shards": SHARDS,
                        "_primary_term": 1,
                    }
        raise ApiError(400, "illegal_argument_exception", f"unsupported request {method} /{'/'.join(parts)}")

    def _put(self, index: str, doc_id: str) -> tuple[int, Json]:
        _check_index_name(index)
        if not doc_id or len(doc_id.encode()) > 512:
            raise ApiError(400, "illegal_argument_exception", "id must be 1 to 512 bytes long")
        source = self._body()
        if source is None:
            raise ApiError(400, "parse_exception", "request body is required")
        outcome = self.store.put(index, doc_id, source)
        return (201 if outcome["result"] == "created" else 200), {
            "_index": index,
            "_type": "_doc",
            "_id": doc_id,
            "_version": outcome["_version"],
            "result": outcome["result"],
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "_seq_no": outcome["_seq_no"],
            "_primary_term": 1,
        }

    def _query(self, params: dict[str, str]) -> Json | None:
        body = self._body()
        if "q" in params:
            return _query_from_q(params["q"])
        if body and "query" in body:
            if not isinstance(body["query"], dict):
                raise ApiError(400, "parsing_exception", "query must be an object")
            return body["query"]
        return None

    def _search(self, index_expr: str, params: dict[str, str]) -> Json:
        started = time.monotonic()
        indices = self.store.resolve(index_expr)
        query = self._query(params)
        try:
            size = int(params.get("size", "10"))
            start = int(params.get("from", "0"))
        except ValueError:
            raise ApiError(400, "illegal_argument_exception", "size and from must be integers") from None
        if size < 0 or start < 0:
            raise ApiError(400, "illegal_argument_exception", "size and from must not be negative")
        if start + size > MAX_RESULT_WINDOW:
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{start + size}].",
            )
        matched = self.store.matching(indices, query)
        hits = [{"_index": i, "_type": "_doc", "_id": d, "_score": 1.0, "_source": s} for i, d, s in matched[start : start + size]]
        return {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "_shards": SHARDS,
            "hits": {"total": {"value": len(matched), "relation": "eq"}, "max_score": 1.0 if hits else None, "hits": hits},
        }


def _check_index_name(index: str) -> None:
    if not INDEX_NAME.match(index) or index in (".", ".."):
        raise ApiError(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{index}], must be lowercase, must not start with '_', '-' or '+'",
            {"index": index},
        )


_CLUSTER_UUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "flocker-standin"))


def _cluster_info() -> Json:
    return {
        "name": socket.gethostname(),
        "cluster_name": "flocker-standin",
        "cluster_uuid": _CLUSTER_UUID,
        "version": {
            "number": "7.17.0",
            "build_flavor": "standin",
            "lucene_version": "none",
            "minimum_wire_compatibility_version": "6.8.0",
            "minimum_index_compatibility_version": "6.0.0-beta1",
        },
        "tagline": "You Know, for Search",
    }


def main() -> None:
    Handler.store = Store(DATA_DIR)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it must run on another thread.
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    # PID 1 in a container ignores SIGTERM unless handled: docker stop would wait 10 s.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on 0.0.0.0:{PORT}, data in {DATA_DIR}")
    # serve_forever notices shutdown() only between polls: 0.5 s by default, all of it downtime in a move.
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    Handler.store.close()
    log("stopped")


if __name__ == "__main__":
    main()
