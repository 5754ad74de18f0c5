"""Fetching: single URLs and a polite crawler (depth, same host, robots.txt, sitemap.xml).

The crawler is breadth-first from the start URL. It reads robots.txt once per host and
skips what it disallows (honouring its Crawl-delay when larger than the asked delay),
seeds the queue with the URLs of sitemap.xml (and of the Sitemap lines of robots.txt),
runs ``concurrency`` fetches at once (across hosts; with a delay, one at a time per host)
and keeps ``delay`` seconds from the end of one request to a host to the start of the
next. A page that fails is reported with its reason; the crawl goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from .models import CrawlSpec
from .parsing import ParseError, media_type_of, parse


@dataclass
class Fetched:
    url: str
    data: bytes = b""
    content_type: str | None = None
    error: str | None = None


@dataclass
class CrawlOutcome:
    pages: list[Fetched] = field(default_factory=list)
    skipped_by_robots: list[str] = field(default_factory=list)


async def fetch(client: httpx.AsyncClient, url: str, max_bytes: int) -> Fetched:
    """One GET; any failure (unreachable, HTTP error, too large) is the page's reason."""
    try:
        async with client.stream("GET", url) as response:
            if response.status_code >= 400:
                return Fetched(url, error=f"HTTP {response.status_code} from {url}")
            chunks: list[bytes] = []
            size = 0
            async for part in response.aiter_bytes():
                size += len(part)
                if size > max_bytes:
                    return Fetched(url, error=f"{url} is larger than {max_bytes} bytes")
                chunks.append(part)
            return Fetched(
                str(response.url), b"".join(chunks), response.headers.get("content-type")
            )
    except httpx.HTTPError as exc:
        return Fetched(url, error=f"{url} unreachable: {type(exc).__name__}: {exc}".strip())


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def _normal(url: str) -> str:
    url = urldefrag(url)[0]
    parts = urlsplit(url)
    return parts._replace(path=parts.path or "/").geturl()


class _Politeness:
    """With a delay, one request at a time per host and ``delay`` seconds from the end of
    one to the start of the next; without one, no limit (``concurrency`` still bounds)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._locks: dict[str, asyncio.Lock] = {}
        self._next: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        if self.delay <= 0:
            yield
            return
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            wait = self._next.get(host, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._next[host] = time.monotonic() + self.delay


def _sitemap_urls(data: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return [], []
    pages: list[str] = []
    nested: list[str] = []
    for el in root.iter():
        if el.tag.endswith("loc") and el.text:
            parent_is_index = root.tag.endswith("sitemapindex")
            (nested if parent_is_index else pages).append(el.text.strip())
    return pages, nested


async def crawl(
    client: httpx.AsyncClient,
    spec: CrawlSpec,
    *,
    max_bytes: int,
    user_agent: str,
    on_page: Callable[[Fetched, int], Awaitable[None]] | None = None,
) -> CrawlOutcome:
    start = _normal(spec.start_url)
    start_host = _host(start)
    outcome = CrawlOutcome()
    robots: dict[str, RobotFileParser | None] = {}
    polite = _Politeness(spec.delay)
    robots_lock = asyncio.Lock()

    async def robots_for(url: str) -> RobotFileParser | None:
        host = _host(url)
        async with robots_lock:
            return await _robots(host, url)

    async def _robots(host: str, url: str) -> RobotFileParser | None:
        if host not in robots:
            robots[host] = None
            parts = urlsplit(url)
            got = await fetch(client, f"{parts.scheme}://{parts.netloc}/robots.txt", 512 * 1024)
            if got.error is None:
                parser = RobotFileParser()
                parser.parse(got.data.decode("utf-8", "replace").splitlines())
                robots[host] = parser
                delay = parser.crawl_delay(user_agent)
                if delay is not None and float(delay) > polite.delay:
                    polite.delay = float(delay)
        return robots[host]

    def allowed_host(url: str) -> bool:
        return urlsplit(url).scheme in ("http", "https") and (
            not spec.same_host or _host(url) == start_host
        )

    seen: set[str] = {start}
    queue: list[tuple[str, int]] = [(start, 0)]
    if spec.sitemap:
        parser = await robots_for(start) if spec.robots else None
        parts = urlsplit(start)
        maps = list(parser.site_maps() or []) if parser is not None else []
        maps = maps or [f"{parts.scheme}://{parts.netloc}/sitemap.xml"]
        visited_maps: set[str] = set()
        while maps and len(visited_maps) < 20:
            sitemap = maps.pop(0)
            if sitemap in visited_maps:
                continue
            visited_maps.add(sitemap)
            got = await fetch(client, sitemap, 10 * 1024 * 1024)
            if got.error is not None:
                continue
            pages, nested = _sitemap_urls(got.data)
            maps.extend(nested)
            for page in pages:
                page = _normal(page)
                if page not in seen and allowed_host(page):
                    seen.add(page)
                    queue.append((page, spec.depth))  # sitemap pages: no links followed

    sem = asyncio.Semaphore(spec.concurrency)
    count = 0

    async def visit(url: str, depth: int) -> list[tuple[str, int]]:
        nonlocal count
        if spec.robots:
            parser = await robots_for(url)
            if parser is not None and not parser.can_fetch(user_agent, url):
                outcome.skipped_by_robots.append(url)
                return []
        async with sem, polite.slot(_host(url)):
            page = await fetch(client, url, max_bytes)
        outcome.pages.append(page)
        count += 1
        if on_page is not None:
            await on_page(page, count)
        if page.error is not None or depth >= spec.depth:
            return []
        try:
            kind = media_type_of(page.url, page.content_type, page.data[:64])
        except Exception:
            return []
        if kind != "text/html":
            return []
        try:
            links = parse(page.data, kind, page.url).links
        except ParseError:
            return []
        return [(link, depth + 1) for link in links]

    while queue and len(outcome.pages) < spec.max_pages:
        room = spec.max_pages - len(outcome.pages)
        batch, queue = queue[:room], queue[room:]
        results = await asyncio.gather(*(visit(u, d) for u, d in batch))
        for links in results:
            for link, depth in links:
                link = _normal(urljoin(start, link))
                if link not in seen and allowed_host(link):
                    seen.add(link)
                    queue.append((link, depth))
    return outcome
