"""A Search-R1-protocol retrieval server over a local ``corpus.jsonl`` (BM25, standard library HTTP).

Stand-in for Search-R1's E5/faiss server when you have none, and what the tests talk to::

    python -m verl_sdar.envs.search.server CORPUS_JSONL [--host 127.0.0.1] [--port 8000]
    # then: env.retriever.url=http://127.0.0.1:8000/retrieve

``POST /retrieve`` with ``{"queries": [...], "topk": k, "return_scores": bool}`` answers
``{"result": [...]}`` (see :mod:`verl_sdar.envs.search.retrieval`). A malformed request gets HTTP 400
with a JSON ``{"error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from verl_sdar.envs.search.retrieval import BM25Retriever, Retriever


def make_handler(retriever: Retriever, default_topk: int = 3):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server naming
            if self.path.rstrip("/") != "/retrieve":
                return self._send(404, {"error": f"unknown path {self.path}; POST /retrieve"})
            try:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                queries = request["queries"]
                if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                    raise ValueError("'queries' must be a list of strings")
                topk = int(request.get("topk") or default_topk)
            except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
                return self._send(400, {"error": f"bad request: {e}"})
            hits = retriever.search(queries, topk)
            if not request.get("return_scores", False):
                hits = [[h["document"] for h in per_query] for per_query in hits]
            self._send(200, {"result": hits})

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet; errors still come back to the client
            pass

    return Handler


def serve_in_thread(retriever: Retriever, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server in a daemon thread; returns it and its ``/retrieve`` URL (``server.shutdown()`` stops it)."""
    server = ThreadingHTTPServer((host, port), make_handler(retriever))
    threading.Thread(target=server.serve_forever, daemon=True, name="retrieval-server").start()
    return server, f"http://{host}:{server.server_address[1]}/retrieve"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.search.server", description=__doc__.split("\n\n")[0])
    p.add_argument("corpus")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(BM25Retriever.from_jsonl(args.corpus)))
    print(f"serving {args.corpus} at http://{args.host}:{server.server_address[1]}/retrieve", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
