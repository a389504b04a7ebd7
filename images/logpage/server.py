#!/usr/bin/env python3
"""The log page: a page on port 8080 listing the documents of the store, in the ELK example.

Not Kibana (neither Kibana nor OpenSearch Dashboards can be had here): the one thing of
Kibana's the article's story uses, the logged lines shown in a browser. The store is the one
linked as alias "es" (ES_PORT_9200_TCP_ADDR/ES_PORT_9200_TCP_PORT, else host "es" port 9200;
ES_URL overrides): Elasticsearch or OpenSearch, which answer these requests alike.
  GET /           HTML: the count of documents in index "logstash" and their messages
                  (the first 1000, from /logstash/_search?size=1000)
  GET /api/count  {"count": N}
Both answer 503 when the store cannot be reached; a missing index counts as 0 documents.
"""

from __future__ import annotations

import html
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PORT = int(os.environ.get("LOGPAGE_PORT", "8080"))
INDEX = os.environ.get("LOGPAGE_INDEX", "logstash")
REQUEST_TIMEOUT = 10.0


def log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat()} logpage: {message}", file=sys.stderr, flush=True)


def store_url() -> str:
    if os.environ.get("ES_URL"):
        return os.environ["ES_URL"].rstrip("/")
    host = os.environ.get("ES_PORT_9200_TCP_ADDR") or "es"
    port = os.environ.get("ES_PORT_9200_TCP_PORT") or "9200"
    return f"http://{host}:{port}"


class StoreUnavailable(Exception):
    pass


def store_get(path: str) -> dict[str, Any] | None:
    """JSON from the store; None for 404 (index not created yet)."""
    try:
        with urllib.request.urlopen(f"{store_url()}{path}", timeout=REQUEST_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise StoreUnavailable(f"store answered HTTP {e.code}") from None
    except (OSError, ValueError) as e:
        raise StoreUnavailable(f"store at {store_url()} unreachable: {e}") from None


def count() -> int:
    body = store_get(f"/{INDEX}/_count")
    return int(body["count"]) if body else 0


class Handler(BaseHTTPRequestHandler):
    server_version = "logpage/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/api/count":
                self._send(200, "application/json", json.dumps({"count": count()}).encode())
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", self._page().encode())
            else:
                self._send(404, "application/json", b'{"error": "not found"}')
        except StoreUnavailable as e:
            if path == "/api/count":
                self._send(503, "application/json", json.dumps({"error": str(e)}).encode())
            else:
                self._send(
                    503,
                    "text/html; charset=utf-8",
                    f"<!doctype html><title>Log page</title><h1>Store unavailable</h1><p>{html.escape(str(e))}</p>".encode(),
                )
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _page(self) -> str:
        total = count()
        body = store_get(f"/{INDEX}/_search?size=1000")
        hits = body["hits"]["hits"] if body else []
        rows = "\n".join(
            f"<tr><td>{html.escape(str(h['_source'].get('@timestamp', '')))}</td>"
            f"<td>{html.escape(str(h['_source'].get('message', json.dumps(h['_source']))))}</td></tr>"
            for h in hits
        )
        shown = f" (showing the first {len(hits)})" if len(hits) < total else ""
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Log page</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Logs in <code>{html.escape(INDEX)}</code></h1>
<p>Store: <code>{html.escape(store_url())}</code></p>
<p id="count"><span class="count">{total}</span> documents{shown}</p>
<table><thead><tr><th>@timestamp</th><th>message</th></tr></thead><tbody>
{rows}
</tbody></table>
</body></html>
"""


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    # PID 1 in a container ignores SIGTERM unless handled: docker stop would wait 10 s.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on 0.0.0.0:{PORT}, reading {store_url()}/{INDEX}")
    # serve_forever notices shutdown() only between polls: 0.5 s by default, all of it downtime in a move.
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    log("stopped")


if __name__ == "__main__":
    main()
