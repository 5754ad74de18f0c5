"""all-MiniLM-L6-v2 on ONNX Runtime: 384 dimensions, and meaning, offline."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from ccc.ai.local_embeddings import LocalEmbedder
from ccc.common import Invalid
from ccc.common.bus import Bus

from .conftest import ai_instance


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    model = LocalEmbedder()
    model.load()
    return model


def test_vectors_have_384_dimensions_and_unit_length(embedder: LocalEmbedder) -> None:
    vectors, tokens = embedder.embed(["a short text", "another, slightly longer piece of text"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert tokens > 6


def test_a_paraphrase_scores_higher_than_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    anchor, paraphrase, unrelated = embedder.embed(
        [
            "How do I reset my password?",
            "What are the steps to change my login password?",
            "The volcano erupted and covered the village in ash.",
        ]
    )[0]
    assert anchor @ paraphrase > 0.6
    assert anchor @ unrelated < 0.2
    assert anchor @ paraphrase > anchor @ unrelated + 0.4


def test_batching_and_order_do_not_change_a_vector(embedder: LocalEmbedder) -> None:
    texts = [f"sentence {i} " + "word " * (i % 13) for i in range(70)]
    together, _ = embedder.embed(texts)
    alone, _ = embedder.embed([texts[42]])
    assert float(together[42] @ alone[0]) > 0.9999


def test_long_and_short_texts_in_one_request_match_each_alone(embedder: LocalEmbedder) -> None:
    """Batches are cut by token count and padded to their own longest text: padding
    and the cut must not leak into any vector, whatever the mix (up to truncation)."""
    texts = ["hi", "word " * 300, "a medium sentence about rockets and markets", "", "x " * 120]
    together, tokens = embedder.embed(texts)
    assert together.shape == (5, 384)
    assert tokens == embedder.count_tokens(texts)
    for i, text in enumerate(texts):
        alone, _ = embedder.embed([text])
        assert float(together[i] @ alone[0]) > 0.9999, text[:20]


async def test_embeddings_endpoint_serves_the_local_model(nats_url: str) -> None:
    async with ai_instance(nats_url, {}, local_embeddings=True) as svc:
        bus = Bus(svc.nc)
        answer = await bus.call("ai.embeddings", {"input": ["first text", "second text"]})
        assert answer["model"] == "all-minilm-l6-v2"
        assert [d["index"] for d in answer["data"]] == [0, 1]
        assert len(answer["data"][0]["embedding"]) == 384
        packed = await bus.call(
            "ai.embeddings", {"input": "first text", "encoding_format": "base64"}
        )
        decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(decoded, answer["data"][0]["embedding"], atol=1e-6)
        with pytest.raises(Invalid, match="384 dimensions"):
            await bus.call("ai.embeddings", {"input": "x", "dimensions": 128})
