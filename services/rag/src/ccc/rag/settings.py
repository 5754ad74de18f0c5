"""Settings of the rag service (``CCC_`` prefix, working local defaults)."""

from __future__ import annotations

from pydantic import SecretStr

from ccc.common.settings import Settings


class RagSettings(Settings):
    """The fleet's settings plus the rag-only knobs."""

    qdrant_url: str | None = None
    """A Qdrant server (``http://qdrant:6333``) through qdrant-client; unset, the embedded
    engine (a Qdrant Edge shard per collection) under ``<data_dir>/rag/``. ``:memory:``
    runs qdrant-client's in-process local mode (tests only: it filters in Python)."""
    qdrant_api_key: SecretStr | None = None
    embedding_model: str = "all-minilm-l6-v2"
    """Model asked of ``ai.embeddings`` for a new collection (the local ONNX MiniLM)."""
    embedding_dimensions: int = 384
    chat_model: str = "gemma3-270m"
    """Model asked of ``ai.chat`` by ``ask`` when the request names none (the ai service's
    local CPU model by default; any model id, alias or group the ai service serves)."""
    chunk_tokens: int = 200
    """Word-piece budget of one chunk (MiniLM reads 256 at most)."""
    chunk_overlap: int = 40
    embed_batch: int = 64
    max_document_bytes: int = 20 * 1024 * 1024
    user_agent: str = "ccc-rag/0.1 (+https://github.com/ccc)"
    fetch_timeout: float = 15.0
    ask_min_similarity: float = 0.3
    """Below this cosine (and without a keyword hit) a chunk does not count as evidence."""
