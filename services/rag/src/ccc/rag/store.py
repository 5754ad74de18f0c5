"""The service's records in KV: collections and documents (``ccc_rag`` bucket).

``collection.<name>`` holds a collection's settings; ``document.<collection>.<id>``
holds what was indexed of one document (its content hash and version), which is how a
re-ingest knows whether to skip, replace or delete.
"""

from __future__ import annotations

import hashlib

from ccc.common import NotFound
from ccc.common.state import StateStore

from .models import CollectionView, DocumentView


def collection_key(name: str) -> str:
    return f"collection.{name}"


def document_id(tenant: str, source: str) -> str:
    return hashlib.sha256(f"{tenant}\0{source}".encode()).hexdigest()[:32]


def document_key(collection: str, doc_id: str) -> str:
    return f"document.{collection}.{doc_id}"


async def load_collection(state: StateStore, name: str) -> CollectionView:
    found = await state.get_model(collection_key(name), CollectionView)
    if found is None:
        raise NotFound(f"collection {name!r} does not exist")
    return found


async def documents(state: StateStore, collection: str) -> list[DocumentView]:
    out: list[DocumentView] = []
    async for entry in state.items(f"document.{collection}."):
        out.append(DocumentView.model_validate(entry.value))
    return out


async def load_document(
    state: StateStore, collection: str, tenant: str, source: str
) -> DocumentView | None:
    return await state.get_model(
        document_key(collection, document_id(tenant, source)), DocumentView
    )
