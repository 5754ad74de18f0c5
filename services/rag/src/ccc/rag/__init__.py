"""The rag service: collections, ingestion, hybrid search and answers with citations."""
