"""Close the two gaps osmem-server has for argilla-server 2.8.0 (runs INSIDE the server's venv).

osmem (an in-memory OpenSearch) rejects Painless scripted updates and ``knn`` queries. Argilla
2.8 uses scripts to add/remove a response (the UI's Submit) and to remove a suggestion, and knn
for "find similar records". This module registers a subclass of Argilla's ``OpenSearchEngine``
under the same name, ``"opensearch"``, that does those three updates as read-modify-write of the
document and ranks vectors by cosine similarity in Python. Everything else is upstream code.

It imports nothing from distillflow: it is loaded by path by ``launch.py`` in the server venv.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import zlib
from typing import Callable, List, Optional
from uuid import UUID

from argilla_server._version import __version__ as SERVER_VERSION
from argilla_server.constants import SEARCH_ENGINE_OPENSEARCH
from argilla_server.search_engine.base import SearchEngine
from argilla_server.search_engine.commons import (
    es_bool_query,
    es_field_for_vector_settings,
    es_index_name_for_dataset,
    es_path_for_vector_settings,
)
from argilla_server.search_engine.opensearch import OpenSearchEngine

PINNED_VERSION = "2.8.0"
if SERVER_VERSION != PINNED_VERSION:  # the overridden methods mirror 2.8.0's internals
    raise RuntimeError(
        f"distillflow's osmem adapter is written for argilla-server {PINNED_VERSION}, "
        f"found {SERVER_VERSION}: pip install 'argilla-server=={PINNED_VERSION}' in the server venv"
    )

# Striped locks serialise read-modify-writes of one document; Argilla builds a new engine per
# request, so they live in the module (one uvicorn worker, one event loop).
_LOCKS = [asyncio.Lock() for _ in range(64)]
_PAGE = 1000


def _lock(key: str) -> asyncio.Lock:
    return _LOCKS[zlib.crc32(key.encode()) % len(_LOCKS)]


def _cosine(a: List[float], b: List[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@SearchEngine.register(engine_name=SEARCH_ENGINE_OPENSEARCH)
@dataclasses.dataclass
class OsmemOpenSearchEngine(OpenSearchEngine):
    """OpenSearchEngine without Painless scripts and without knn (both unsupported by osmem)."""

    async def _read_modify_write(self, index: str, doc_id: str, mutate: Callable[[dict], None]) -> None:
        async with _lock(f"{index}/{doc_id}"):
            found = await self.client.get(index=index, id=doc_id)
            source = found["_source"]
            mutate(source)
            await self.client.index(index=index, id=doc_id, body=source, refresh=True)

    async def update_record_response(self, response) -> None:
        record = response.record
        es_response = self._map_record_response_to_es(response)

        def mutate(source: dict) -> None:
            kept = [r for r in (source.get("responses") or []) if str(r.get("id")) != str(es_response["id"])]
            source["responses"] = [*kept, es_response]

        await self._read_modify_write(es_index_name_for_dataset(record.dataset), str(record.id), mutate)

    async def delete_record_response(self, response) -> None:
        record = response.record

        def mutate(source: dict) -> None:
            source["responses"] = [r for r in (source.get("responses") or []) if str(r.get("id")) != str(response.id)]

        await self._read_modify_write(es_index_name_for_dataset(record.dataset), str(record.id), mutate)

    async def delete_record_suggestion(self, suggestion) -> None:
        name = suggestion.question.name

        def mutate(source: dict) -> None:
            (source.get("suggestions") or {}).pop(name, None)

        index = es_index_name_for_dataset(suggestion.record.dataset)
        await self._read_modify_write(index, str(suggestion.record_id), mutate)

    async def _request_similarity_search(
        self,
        index: str,
        vector_settings,
        value: List[float],
        k: int,
        excluded_id: Optional[UUID] = None,
        query_filters: Optional[List[dict]] = None,
    ) -> dict:
        # Upstream sends a knn query (post-filtered); here: fetch the filtered vectors, rank by cosine.
        query = es_bool_query(must=query_filters) if query_filters else {"match_all": {}}
        path = es_path_for_vector_settings(vector_settings)
        field = es_field_for_vector_settings(vector_settings)
        scored: List[tuple] = []
        offset = 0
        while True:
            page = await self.client.search(
                index=index, body={"query": query}, _source_includes=[field], from_=offset, size=_PAGE
            )
            hits = page["hits"]["hits"]
            for hit in hits:
                if excluded_id is not None and hit["_id"] == str(excluded_id):
                    continue
                vector = ((hit.get("_source") or {}).get("vectors") or {}).get(path)
                if vector:
                    # Lucene's cosinesimil score, so Argilla's score thresholds keep their meaning.
                    scored.append(((1.0 + _cosine(value, vector)) / 2.0, hit["_id"]))
            offset += len(hits)
            if len(hits) < _PAGE:
                break
        scored.sort(key=lambda item: item[0], reverse=True)
        top = scored[:k]
        return {"hits": {"total": {"value": len(top)}, "hits": [{"_id": i, "_score": s} for s, i in top]}}
