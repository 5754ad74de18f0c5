"""A real crawl of a site served on loopback, and PDF / DOCX files made in the test."""

from __future__ import annotations

import base64
import io
import itertools
from typing import Any

from ccc.common.bus import Bus

from .conftest import Site, by_source, finished, ingest, serve_site


def _site() -> Site:
    site = Site()
    site.html(
        "/",
        "Home",
        "<h1>Orbital Station</h1><p>Welcome to the station handbook.</p>"
        '<a href="/docker.html">Docking</a> <a href="/life.html">Life support</a>'
        ' <a href="/private/keys.html">Keys</a> <a href="https://elsewhere.example/x">Out</a>'
        ' <a href="/files/spec.pdf">Spec</a>',
    )
    site.html(
        "/docker.html",
        "Docking",
        "<h1>Docking</h1><h2>Approach</h2><p>Ships approach the station on port arm "
        "seven at a speed under two metres per second.</p>"
        '<a href="/deep/procedure.html">Procedure</a>',
    )
    site.html(
        "/life.html",
        "Life support",
        "<h1>Life support</h1><p>Oxygen scrubbers are replaced every ninety days.</p>",
    )
    site.html("/deep/procedure.html", "Procedure", "<p>The airlock cycles in forty seconds.</p>")
    site.html("/private/keys.html", "Keys", "<p>The master key code is ZEBRA-99.</p>")
    site.html("/orphan.html", "Orphan", "<p>The observation deck opens at dawn, station time.</p>")
    site.put("/robots.txt", "text/plain", b"User-agent: *\nDisallow: /private/\n")
    site.put(
        "/files/spec.pdf",
        "application/pdf",
        _pdf(["The hull is rated for a pressure of nine atmospheres."]),
    )
    return site


def _sitemap(site: Site) -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{site.url}/</loc></url><url><loc>{site.url}/orphan.html</loc></url>"
        "</urlset>"
    )
    site.put("/sitemap.xml", "application/xml", xml.encode())


async def _texts(bus: Bus, collection: str, query: str) -> list[str]:
    found = await bus.call("rag.search", {"collection": collection, "query": query, "limit": 10})
    return [h["text"] for h in found["hits"]]


async def test_crawl_follows_links_obeys_robots_reads_the_sitemap_and_recrawls(
    bus: Bus,
) -> None:
    site = _site()
    async with serve_site(site) as url:
        _sitemap(site)
        await bus.call("rag.collection.create", {"name": "site"})
        crawl = {"start_url": f"{url}/", "depth": 1, "delay": 0.1, "concurrency": 2}
        first = await ingest(bus, {"collection": "site", "crawl": crawl, "tags": ["handbook"]})
        docs = by_source(first)
        assert set(docs) == {
            f"{url}/",
            f"{url}/docker.html",
            f"{url}/life.html",
            f"{url}/orphan.html",
            f"{url}/files/spec.pdf",
        }, docs  # depth 1: not /deep/, robots: not /private/
        assert all(d["status"] == "added" for d in docs.values())
        assert "/private/keys.html" not in site.hits
        pages = [
            t for p, t in zip(site.hits, site.times, strict=True) if p.endswith(("/", ".html"))
        ]
        gaps = [b - a for a, b in itertools.pairwise(pages)]
        assert min(gaps) >= 0.1, gaps  # politeness: one request per delay to the host
        assert "/robots.txt" in site.hits and "/sitemap.xml" in site.hits
        texts = await _texts(bus, "site", "how fast may ships approach")
        assert "port arm seven" in texts[0]
        texts = await _texts(bus, "site", "hull pressure rating")
        assert "nine atmospheres" in texts[0]

        # a day later: one page changed, one gone, the rest as they were
        site.html(
            "/life.html",
            "Life support",
            "<h1>Life support</h1><p>Oxygen scrubbers are replaced every sixty days.</p>",
        )
        del site.pages["/docker.html"]
        crawl2 = {**crawl, "depth": 2}
        second = await ingest(bus, {"collection": "site", "crawl": crawl2, "tags": ["handbook"]})
        docs = by_source(second)
        assert docs[f"{url}/life.html"]["status"] == "updated"
        assert docs[f"{url}/docker.html"]["status"] == "deleted"
        assert docs[f"{url}/orphan.html"]["status"] == "unchanged"
        assert docs[f"{url}/"]["status"] == "unchanged"
        texts = " ".join(await _texts(bus, "site", "oxygen scrubbers replaced"))
        assert "sixty days" in texts and "ninety days" not in texts
        assert not any("port arm seven" in t for t in await _texts(bus, "site", "docking ships"))
        listed = await bus.call("rag.document.list", {"collection": "site"})
        assert f"{url}/docker.html" not in [d["source"] for d in listed["documents"]]

        # URLs one by one: an unreachable one fails alone, with its reason
        dead = "http://127.0.0.1:9/nothing.html"
        third = await ingest(
            bus,
            {
                "collection": "site",
                "urls": [f"{url}/life.html", dead, f"{url}/missing.html"],
                "tags": ["handbook"],
            },
        )
        docs = by_source(third)
        assert docs[f"{url}/life.html"]["status"] == "unchanged"
        assert docs[dead]["status"] == "failed" and "unreachable" in docs[dead]["reason"]
        assert "404" in docs[f"{url}/missing.html"]["reason"]


def _pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Maintenance manual", level=1)
    document.add_paragraph("General care of the hydroponics bay.")
    document.add_heading("Pumps", level=2)
    document.add_paragraph("The nutrient pump model HX-220 must be flushed every week.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Filter"
    table.rows[0].cells[1].text = "replace monthly"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _upload(name: str, data: bytes) -> dict[str, Any]:
    return {"filename": name, "content_base64": base64.b64encode(data).decode()}


async def test_pdf_and_docx_are_read_and_a_corrupt_pdf_fails_alone(bus: Bus) -> None:
    await bus.call("rag.collection.create", {"name": "files"})
    pdf = _pdf(
        [
            "Chapter one. The reactor starts with key sequence alpha.",
            "Chapter two. Emergency shutdown uses the red lever beside the reactor.",
        ]
    )
    corrupt = b"%PDF-1.4\n" + b"\x00garbage" * 50
    truncated = pdf[: len(pdf) // 3]
    result = await ingest(
        bus,
        {
            "collection": "files",
            "files": [
                _upload("reactor.pdf", pdf),
                _upload("manual.docx", _docx()),
                _upload("broken.pdf", corrupt),
                _upload("cut.pdf", truncated),
                _upload("notes.txt", b"Plain notes: the cat sleeps in bay four."),
            ],
        },
    )
    docs = by_source(result)
    assert docs["reactor.pdf"]["status"] == "added"
    assert docs["manual.docx"]["status"] == "added"
    assert docs["notes.txt"]["status"] == "added"
    assert docs["broken.pdf"]["status"] == "failed" and docs["broken.pdf"]["reason"]
    assert docs["cut.pdf"]["status"] == "failed"
    assert result["failed"] == 2 and result["added"] == 3

    found = await bus.call(
        "rag.search", {"collection": "files", "query": "what does an emergency shutdown use"}
    )
    top = found["hits"][0]
    assert top["source"] == "reactor.pdf" and top["page"] == 2 and "red lever" in top["text"]
    found = await bus.call("rag.search", {"collection": "files", "query": "HX-220 flushing"})
    top = found["hits"][0]
    assert top["source"] == "manual.docx" and "HX-220" in top["text"]
    assert top["heading"] == "Maintenance manual > Pumps"
    listed = await bus.call("rag.document.list", {"collection": "files"})
    assert sorted(d["source"] for d in listed["documents"]) == [
        "manual.docx",
        "notes.txt",
        "reactor.pdf",
    ]  # nothing of the broken ones


async def test_an_operation_reports_progress(bus: Bus) -> None:
    import json

    await bus.call("rag.collection.create", {"name": "progress"})
    seen: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        seen.append(json.loads(msg.data))

    sub = await bus.nc.subscribe("ccc.evt.rag.operation.*", cb=on)
    texts = [
        {"source": f"n{i}.txt", "text": f"Note number {i} about topic {i % 3}."} for i in range(5)
    ]
    record = await bus.call("rag.ingest", {"collection": "progress", "texts": texts})
    assert record["status"] == "running"
    done = await finished(bus, record)
    assert done["status"] == "succeeded" and done["result"]["added"] == 5
    await sub.unsubscribe()
    mine = [e for e in seen if e["id"] == record["id"]]
    assert any(e["status"] == "running" and 0 < e["progress"] < 1 for e in mine)
    assert mine[-1]["status"] == "succeeded"
