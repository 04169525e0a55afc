"""Retrievers for the ``search`` agent loop: in-process BM25 and the Search-R1 HTTP protocol.

Both return, per query, a list of hits ``{"document": {"id", "contents"}, "score"}`` -- the shape of
Search-R1's retrieval server with ``return_scores=true`` -- and :func:`format_hits` renders them the
way the agent sees them inside ``<information>...</information>``.

Search-R1 protocol (``retrieval_server.py`` of Search-R1, also served by
:mod:`verl_sdar.envs.search.server`)::

    POST {url}   {"queries": ["...", ...], "topk": 3, "return_scores": true}
    ->           {"result": [[{"document": {"id": "...", "contents": "Title\\ntext"}, "score": 1.2}, ...], ...]}

``contents`` is the title line, a newline, then the passage text.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

logger = logging.getLogger(__name__)

Hit = dict  # {"document": {"id": str, "contents": str}, "score": float}


class RetrievalError(RuntimeError):
    """A retriever could not answer (bad response, server down); the message says which."""


class Retriever(Protocol):
    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]: ...


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


class BM25Retriever:
    """BM25 (``bm25s``, Lucene variant, English stopwords) over a list of passages in process."""

    def __init__(self, docs: Sequence[dict]):
        import bm25s

        if not docs:
            raise ValueError("BM25Retriever: the corpus is empty")
        for i, doc in enumerate(docs):
            if "contents" not in doc:
                raise ValueError(f"BM25Retriever: document {i} has no 'contents' field: {sorted(doc)}")
        self.docs = [{"id": str(d.get("id", i)), "contents": d["contents"]} for i, d in enumerate(docs)]
        self._index = bm25s.BM25()
        self._index.index(_tokenize([d["contents"] for d in self.docs]), show_progress=False)
        self._vocab = set(self._index.vocab_dict)

    @classmethod
    def from_jsonl(cls, path: str) -> BM25Retriever:
        with open(path) as f:
            return cls([json.loads(line) for line in f if line.strip()])

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        k = min(topk, len(self.docs))
        results: list[list[Hit]] = []
        for tokens in _tokenize(queries):
            known = [t for t in tokens if t in self._vocab]
            if not known:  # nothing to match: no hits rather than arbitrary documents
                results.append([])
                continue
            ids, scores = self._index.retrieve([known], k=k, show_progress=False)
            hits = [
                {"document": dict(self.docs[int(i)]), "score": float(s)}
                for i, s in zip(ids[0], scores[0], strict=False)
                if float(s) > 0.0
            ]
            results.append(hits)
        return results


BACKOFF_S = 0.2  # HTTPRetriever waits BACKOFF_S * k after its k-th failed try


class HTTPRetriever:
    """Client of a Search-R1 retrieval server (``POST url`` with a batch of queries).

    Each request waits at most ``timeout_s``; a request that fails (connection refused or reset,
    an HTTP error status, a timeout, a body that is not JSON) is retried ``retries`` times, after
    0.2 s, 0.4 s, ... A search that still fails raises :class:`RetrievalError`, which the agent
    loops turn into a ``Search failed`` observation for that one episode.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 2):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retriever url must start with http:// or https://, got {url!r}")
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"retriever {url}: timeout_s must be > 0 and retries >= 0, got {timeout_s}, {retries}")
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries

    @property
    def max_wait_s(self) -> float:
        """The longest one :meth:`search` can take: every try timing out, with the back-off after each."""
        attempts = self.retries + 1
        return attempts * self.timeout_s + BACKOFF_S * attempts * (attempts + 1) / 2

    def search(self, queries: Sequence[str], topk: int) -> list[list[Hit]]:
        body = json.dumps({"queries": list(queries), "topk": int(topk), "return_scores": True}).encode()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = json.loads(response.read().decode())
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = e
                logger.warning("retriever %s: attempt %d failed: %s", self.url, attempt + 1, e)
                time.sleep(BACKOFF_S * (attempt + 1))
        else:
            raise RetrievalError(f"retriever {self.url} failed after {self.retries + 1} attempts: {last}")
        result = payload.get("result") if isinstance(payload, dict) else None
        if not isinstance(result, list) or len(result) != len(queries):
            raise RetrievalError(
                f"retriever {self.url}: expected {{'result': [...]}} with {len(queries)} lists, "
                f"got {str(payload)[:200]}"
            )
        out: list[list[Hit]] = []
        for hits in result:
            normalised = []
            for hit in hits:
                if isinstance(hit, dict) and "document" in hit:  # return_scores=true
                    doc, score = hit["document"], float(hit.get("score", 0.0))
                else:  # return_scores=false: bare documents
                    doc, score = hit, 0.0
                if not isinstance(doc, dict) or "contents" not in doc:
                    raise RetrievalError(f"retriever {self.url}: a hit has no document contents: {str(hit)[:200]}")
                normalised.append({"document": doc, "score": score})
            out.append(normalised)
        return out


def format_hits(hits: Sequence[Hit]) -> str:
    """``Doc 1 (Title: ...) text`` lines, as the agent reads them; a note when nothing matched."""
    if not hits:
        return "No documents found."
    lines = []
    for i, hit in enumerate(hits):
        contents = str(hit["document"]["contents"])
        title, _, text = contents.partition("\n")
        lines.append(f"Doc {i + 1} (Title: {title}) {text}".strip())
    return "\n".join(lines)


def health_check(url: str, timeout_s: float = 10.0) -> None:
    """One probe search (``"health check"``, top 1) against a Search-R1 server, no retry; raises
    :class:`RetrievalError` (or ``ValueError`` for a malformed url) when it does not answer in the
    protocol's shape within ``timeout_s``."""
    HTTPRetriever(url, timeout_s=timeout_s, retries=0).search(["health check"], 1)


def make_retriever(url: str | None = None, corpus_path: str | None = None, timeout_s: float = 30.0,
                   retries: int = 2) -> Retriever:
    """HTTP when ``url`` is set (``timeout_s`` per request, ``retries`` retries), else BM25 over
    ``corpus_path`` (a ``corpus.jsonl``)."""
    if url:
        return HTTPRetriever(url, timeout_s=timeout_s, retries=retries)
    if not corpus_path:
        raise ValueError("search env: set env.retriever.url (a Search-R1 server) or env.retriever.corpus_path")
    return BM25Retriever.from_jsonl(corpus_path)
