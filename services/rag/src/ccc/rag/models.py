"""The rag service's contracts: requests and answers of every endpoint."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TENANT = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
SearchMode = Literal["hybrid", "dense", "sparse"]


class CollectionCreate(BaseModel):
    name: str = Field(pattern=NAME, description="Lower-case name, the collection's id")
    description: str = ""
    embedding_model: str | None = Field(
        default=None, description="Model for ai.embeddings; omitted, the service's default"
    )
    dimensions: int | None = Field(
        default=None, gt=0, le=8192, description="Vector size; omitted, the model's (measured)"
    )


class CollectionView(BaseModel):
    name: str
    description: str = ""
    embedding_model: str
    dimensions: int
    engine: str
    created_at: datetime
    documents: int = 0
    chunks: int = 0


class CollectionRef(BaseModel):
    collection: str = Field(pattern=NAME)


class CollectionList(BaseModel):
    collections: list[CollectionView]


class Empty(BaseModel):
    pass


class Deleted(BaseModel):
    deleted: str
    chunks: int = 0


class FileUpload(BaseModel):
    """A file sent inline: the gateway forwards JSON only, so the bytes travel as base64."""

    filename: str = Field(min_length=1, max_length=512)
    content_base64: str
    source: str | None = Field(
        default=None, description="Identity of the document; omitted, the filename"
    )
    content_type: str | None = Field(default=None, description="Overrides the file extension")
    tags: list[str] = Field(default_factory=list)

    @field_validator("content_base64")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not valid base64: {exc}") from exc
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.content_base64)


class TextDocument(BaseModel):
    """A document given as text (markdown, plain text or HTML)."""

    source: str = Field(min_length=1, max_length=2048)
    text: str
    content_type: Literal["text/plain", "text/markdown", "text/html"] = "text/plain"
    title: str | None = None
    tags: list[str] = Field(default_factory=list)


class CrawlSpec(BaseModel):
    start_url: str = Field(pattern=r"^https?://")
    depth: int = Field(default=1, ge=0, le=10, description="Links followed from the start")
    same_host: bool = True
    max_pages: int = Field(default=100, ge=1, le=10_000)
    concurrency: int = Field(default=4, ge=1, le=32)
    delay: float = Field(default=0.0, ge=0, le=60, description="Seconds between two requests")
    robots: bool = Field(default=True, description="Obey robots.txt")
    sitemap: bool = Field(default=True, description="Also visit the URLs of sitemap.xml")
    prune: bool = Field(
        default=True,
        description="Documents of an earlier crawl of this start URL that are gone now "
        "leave the index",
    )


class IngestRequest(BaseModel):
    collection: str = Field(pattern=NAME)
    tenant: str = Field(default="default", pattern=TENANT)
    files: list[FileUpload] = Field(default_factory=list)
    texts: list[TextDocument] = Field(default_factory=list)
    urls: list[str] = Field(default_factory=list, description="Pages or files to fetch")
    crawl: CrawlSpec | None = None
    tags: list[str] = Field(default_factory=list, description="Added to every document")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return urls

    @model_validator(mode="after")
    def _something(self) -> IngestRequest:
        if not (self.files or self.texts or self.urls or self.crawl):
            raise ValueError("give files, texts, urls or a crawl")
        return self


Outcome = Literal["added", "updated", "unchanged", "deleted", "failed"]


class DocumentOutcome(BaseModel):
    source: str
    status: Outcome
    chunks: int = 0
    reason: str | None = None


class IngestResult(BaseModel):
    collection: str
    tenant: str
    documents: list[DocumentOutcome]
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks_indexed: int = 0
    seconds: float = 0.0


class DocumentView(BaseModel):
    id: str
    collection: str
    tenant: str
    source: str
    title: str | None = None
    content_type: str
    content_hash: str
    chunks: int
    version: str
    tags: list[str] = Field(default_factory=list)
    origin: str | None = None
    ingested_at: datetime
    updated_at: datetime


class DocumentQuery(BaseModel):
    collection: str = Field(pattern=NAME)
    tenant: str = Field(default="default", pattern=TENANT)
    limit: int = Field(default=100, ge=1, le=10_000)


class DocumentList(BaseModel):
    documents: list[DocumentView]


class DocumentRef(BaseModel):
    collection: str = Field(pattern=NAME)
    tenant: str = Field(default="default", pattern=TENANT)
    source: str = Field(min_length=1)


class Filters(BaseModel):
    tenant: str = Field(default="default", pattern=TENANT)
    sources: list[str] | None = Field(default=None, description="Only these documents")
    tags: list[str] | None = Field(default=None, description="Documents with any of these")
    ingested_after: datetime | None = None
    ingested_before: datetime | None = None


class SearchRequest(Filters):
    collection: str = Field(pattern=NAME)
    query: str = Field(min_length=1, max_length=4000)
    limit: int = Field(default=10, ge=1, le=100)
    mode: SearchMode = Field(
        default="hybrid", description="hybrid: dense + BM25 sparse fused with RRF"
    )
    fusion: Literal["rrf", "dbsf"] = Field(
        default="rrf",
        description="How hybrid merges its two lists: rrf (reciprocal rank fusion, ranks "
        "only) or dbsf (distribution-based score fusion: normalised scores, so a decisive "
        "keyword match weighs more)",
    )
    rerank: bool = Field(
        default=False,
        description="Re-order the fused candidates by exact cosine to the query, with a "
        "bonus for query terms the chunk contains",
    )


class SearchHit(BaseModel):
    id: str
    score: float
    text: str
    source: str
    title: str | None = None
    heading: str | None = None
    start: int = Field(description="Offset of the chunk in the document's extracted text")
    end: int
    page: int | None = None
    tags: list[str] = Field(default_factory=list)
    similarity: float | None = Field(default=None, description="Cosine to the query")
    keyword_overlap: float | None = Field(
        default=None, description="Share of the query's terms the chunk contains"
    )


class SearchResult(BaseModel):
    collection: str
    mode: SearchMode
    hits: list[SearchHit]


class AskRequest(Filters):
    collection: str = Field(pattern=NAME)
    question: str = Field(min_length=1, max_length=4000)
    limit: int = Field(default=5, ge=1, le=20, description="Chunks given to the model")
    model: str | None = None
    max_tokens: int = Field(default=512, ge=1, le=8192)


class Citation(BaseModel):
    n: int
    source: str
    title: str | None = None
    start: int
    end: int
    page: int | None = None
    text: str


class AskResult(BaseModel):
    answer: str
    found: bool
    citations: list[Citation]
    model: str | None = None
