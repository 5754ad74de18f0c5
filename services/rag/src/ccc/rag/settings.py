"""Settings of the rag service (``CCC_`` prefix, working local defaults)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ccc.common.settings import Settings


def _rag(default: Any, name: str) -> Any:
    """A rag-only knob, read from ``CCC_RAG_<NAME>`` (set by field name in code)."""
    return Field(default=default, validation_alias=f"CCC_RAG_{name.upper()}")


class RagSettings(Settings):
    """The fleet's settings, ``CCC_QDRANT_URL`` / ``CCC_QDRANT_API_KEY``, and the rag-only
    knobs as ``CCC_RAG_*``."""

    model_config = SettingsConfigDict(env_prefix="CCC_", extra="ignore", populate_by_name=True)

    qdrant_url: str | None = None
    """A Qdrant server (``http://qdrant:6333``) through qdrant-client; unset, the embedded
    engine (a Qdrant Edge shard per collection) under ``<data_dir>/rag/``. ``:memory:``
    runs qdrant-client's in-process local mode (tests only: it filters in Python)."""
    qdrant_api_key: SecretStr | None = None
    embedding_model: str = _rag("all-minilm-l6-v2", "embedding_model")
    """Model asked of ``ai.embeddings`` for a new collection (the local ONNX MiniLM)."""
    chat_model: str = _rag("gemma3-270m", "chat_model")
    """Model asked of ``ai.chat`` by ``ask`` when the request names none (the ai service's
    local CPU model by default; any model id, alias or group the ai service serves)."""
    chunk_tokens: int = _rag(200, "chunk_tokens")
    """Word-piece budget of one chunk (MiniLM reads 256 at most)."""
    chunk_overlap: int = _rag(40, "chunk_overlap")
    embed_batch: int = _rag(64, "embed_batch")
    """Texts per ``ai.embeddings`` call."""
    embed_parallel: int = _rag(2, "embed_parallel")
    """``ai.embeddings`` calls in flight during an ingest (several ai instances share them)."""
    max_document_bytes: int = _rag(20 * 1024 * 1024, "max_document_bytes")
    user_agent: str = _rag("ccc-rag/0.1", "user_agent")
    fetch_timeout: float = _rag(15.0, "fetch_timeout")
    ask_min_similarity: float = _rag(0.3, "ask_min_similarity")
    """Below this cosine (and without a keyword hit) a chunk does not count as evidence."""
