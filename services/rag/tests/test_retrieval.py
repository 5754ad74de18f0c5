"""Retrieval quality on a small labelled set, and answers that cite their evidence."""

from __future__ import annotations

import re
from typing import Any

from ccc.common.bus import Bus

from .conftest import ScriptedModel, ingest, passages

# Near-identical error pages: only the part number tells them apart.
ERRORS = [
    ("errors/qx-7731-a.md", "QX7731A", "the coolant loop pressure dropped below the limit"),
    ("errors/qx-7731-b.md", "QX7731B", "the coolant loop pressure rose above the limit"),
    ("errors/qx-7731-c.md", "QX7731C", "the coolant loop temperature rose above the limit"),
    ("errors/qx-7713-b.md", "QX7713B", "the coolant loop flow stopped"),
    ("errors/qx-1377-b.md", "QX1377B", "the coolant loop sensor is disconnected"),
]
OTHERS = [
    (
        "account/password.md",
        "# Password reset\n\nOpen Settings, choose Security and press 'Forgot password'. "
        "A reset link is mailed to you within five minutes.",
    ),
    (
        "kitchen/coffee.md",
        "# Coffee machine\n\nDescale the espresso machine with citric acid once a month.",
    ),
    ("garden/roses.md", "# Roses\n\nPrune roses in late winter, just above an outward bud."),
]
# Labelled queries: (query, relevant source)
EXACT = ("QX7731B", "errors/qx-7731-b.md")
PARAPHRASE = (
    "I cannot remember my login credentials, how do I regain access?",
    "account/password.md",
)


async def _setup(bus: Bus, name: str) -> None:
    await bus.call("rag.collection.create", {"name": name})
    texts: list[dict[str, Any]] = [
        {
            "source": src,
            "content_type": "text/markdown",
            "text": f"# Error {code}\n\nThe controller reports error {code} when {what}. "
            "Check the coolant loop and restart the controller.",
        }
        for src, code, what in ERRORS
    ]
    texts += [
        {"source": src, "text": text, "content_type": "text/markdown"} for src, text in OTHERS
    ]
    await ingest(bus, {"collection": name, "texts": texts})


async def _rank(
    bus: Bus,
    collection: str,
    query: str,
    relevant: str,
    mode: str,
    k: int = 1,
    fusion: str = "rrf",
) -> int | None:
    found = await bus.call(
        "rag.search",
        {"collection": collection, "query": query, "mode": mode, "limit": 10, "fusion": fusion},
    )
    sources = [h["source"] for h in found["hits"]]
    return sources.index(relevant) + 1 if relevant in sources[:k] else None


async def test_hybrid_finds_what_each_half_misses(bus: Bus) -> None:
    await _setup(bus, "labelled")
    # an exact identifier: dense sees near-identical pages, BM25 sees the token
    query, relevant = EXACT
    assert await _rank(bus, "labelled", query, relevant, "dense") is None
    assert await _rank(bus, "labelled", query, relevant, "sparse") == 1
    assert await _rank(bus, "labelled", query, relevant, "hybrid") == 1
    assert await _rank(bus, "labelled", query, relevant, "hybrid", fusion="dbsf") == 1
    # a paraphrase with no word in common: BM25 has nothing, dense has the meaning
    query, relevant = PARAPHRASE
    assert await _rank(bus, "labelled", query, relevant, "sparse", k=10) is None
    assert await _rank(bus, "labelled", query, relevant, "dense") == 1
    assert await _rank(bus, "labelled", query, relevant, "hybrid") == 1
    assert await _rank(bus, "labelled", query, relevant, "hybrid", fusion="dbsf") == 1


async def test_filters_by_source_tag_and_date(bus: Bus) -> None:
    await bus.call("rag.collection.create", {"name": "filters"})
    await ingest(
        bus,
        {
            "collection": "filters",
            "tags": ["red"],
            "texts": [{"source": "a.txt", "text": "Apples grow on trees."}],
        },
    )
    await ingest(
        bus,
        {
            "collection": "filters",
            "tags": ["green"],
            "texts": [{"source": "b.txt", "text": "Apples are sold at markets."}],
        },
    )
    base = {"collection": "filters", "query": "apples"}
    got = await bus.call("rag.search", {**base, "tags": ["green"]})
    assert [h["source"] for h in got["hits"]] == ["b.txt"]
    got = await bus.call("rag.search", {**base, "sources": ["a.txt"]})
    assert [h["source"] for h in got["hits"]] == ["a.txt"]
    got = await bus.call("rag.search", {**base, "ingested_after": "2999-01-01T00:00:00Z"})
    assert got["hits"] == []
    got = await bus.call(
        "rag.search", {**base, "ingested_before": "2999-01-01T00:00:00Z", "rerank": True}
    )
    assert {h["source"] for h in got["hits"]} == {"a.txt", "b.txt"}


def _answer_from_passages(prompt: str) -> str:
    """The scripted model: quote the passage that holds a port number, cite it."""
    for n, text in passages(prompt).items():
        m = re.search(r"port (\d+)", text)
        if m:
            return f"The relay listens on port {m.group(1)} [{n}]."
    return "NOT_FOUND"


async def test_ask_cites_the_passage_that_holds_the_answer(bus: Bus, model: ScriptedModel) -> None:
    await bus.call("rag.collection.create", {"name": "ask"})
    manual = (
        "# Relay manual\n\n## Overview\n\nThe relay forwards telemetry from the probes to "
        "the ground station.\n\n## Network\n\nThe relay listens on port 7781 for telemetry "
        "and on port 7782 for commands.\n\n## Power\n\nThe relay draws 12 watts."
    )
    await ingest(
        bus,
        {
            "collection": "ask",
            "texts": [
                {"source": "relay.md", "text": manual, "content_type": "text/markdown"},
                {"source": "weather.txt", "text": "Tomorrow brings light rain and a cool breeze."},
            ],
        },
    )
    model.script = _answer_from_passages
    answer = await bus.call(
        "rag.ask", {"collection": "ask", "question": "Which port does the relay listen on?"}
    )
    assert answer["found"] is True
    assert "7781" in answer["answer"] and "[" in answer["answer"]
    assert len(answer["citations"]) == 1
    cite = answer["citations"][0]
    assert cite["source"] == "relay.md" and "7781" in cite["text"]
    assert manual[cite["start"] : cite["end"]] == cite["text"]  # offsets into the document
    assert "port 7781" in manual[cite["start"] : cite["end"]]

    # nothing relevant: an explicit "not found", and the model is not even asked
    asked = len(model.prompts)
    answer = await bus.call(
        "rag.ask", {"collection": "ask", "question": "Who won the 1954 football world cup?"}
    )
    assert answer == {
        "answer": "Not found in the documents.",
        "found": False,
        "citations": [],
        "model": None,
    }
    assert len(model.prompts) == asked

    # relevant passages, but the model finds no answer in them
    model.script = lambda prompt: "NOT_FOUND"
    answer = await bus.call(
        "rag.ask", {"collection": "ask", "question": "What is the relay's serial number?"}
    )
    assert answer["found"] is False and answer["answer"] == "Not found in the documents."
