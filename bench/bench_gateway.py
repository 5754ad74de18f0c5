"""Gateway and runtime overhead, each against its baseline in the same run.

1. Bus only, 100 requests in flight from one client: CCC runtime endpoint vs a raw
   nats-py responder doing the same pydantic work. Goal: runtime ≥ 85 % of raw.
2. HTTP with wrk, 1 and 50 connections: gateway → bus → echo service vs a direct
   FastAPI echo route, same uvicorn settings. Goal: ≥ 70 % of direct throughput and
   ≤ 0.5 ms added p50 at 1 connection.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import uvloop

from ccc.common.natsserver import free_port, port_open, temporary_server

HERE = Path(__file__).parent
TARGETS = str(HERE / "_bench_targets.py")
DURATION = os.environ.get("BENCH_DURATION", "4s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BODY = '{"text": "hello", "n": 1}'


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_port(port: int) -> None:
    for _ in range(200):
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


async def bus_load(url: str, subject: str, total: int, in_flight: int) -> dict[str, float]:
    nc = await nats.connect(url)
    payload = BODY.encode()
    deadline = time.monotonic() + 30
    while True:  # wait until the target answers (it may still be starting)
        try:
            await nc.request(subject, payload, timeout=1)
            break
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    for _ in range(200):  # warm-up
        await nc.request(subject, payload, timeout=5)
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            t = time.perf_counter()
            await nc.request(subject, payload, timeout=10)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    await nc.close()
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def wrk(url: str, connections: int, headers: dict[str, str]) -> dict[str, float]:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = '{BODY}'",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write("\n".join(lines) + "\n")
    script.close()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]+", "", text)  # type: ignore[union-attr]
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The round with the highest throughput: the least disturbed by other load."""
    return max(runs, key=lambda m: m["rps"])


def row(name: str, m: dict[str, float]) -> None:
    print(
        f"  {name:<34} {m['rps']:>9.0f} req/s   "
        f"p50 {m['p50_ms']:>7.3f} ms   p99 {m['p99_ms']:>7.3f} ms"
        + (f"   non-2xx {m['errors']:.0f}" if m.get("errors") else "")
    )


def main() -> None:
    print(f"machine: {os.cpu_count()} cores, {sys.platform}, python {sys.version.split()[0]}")
    with temporary_server() as url:
        procs = [spawn(TARGETS, "raw", url), spawn(TARGETS, "service", url)]
        try:
            time.sleep(2.0)
            for in_flight, total in ((100, 20000), (1, 5000)):
                print(
                    f"\nBus request-reply, {in_flight} in flight, {total} requests, "
                    f"best of {ROUNDS} alternating rounds (one client process)"
                )
                raw, runtime = [], []
                for _ in range(ROUNDS):  # alternate, so background load hits both alike
                    raw.append(asyncio.run(_run(bus_load(url, "bench.raw", total, in_flight))))
                    runtime.append(
                        asyncio.run(_run(bus_load(url, "ccc.benchecho.echo", total, in_flight)))
                    )
                best_raw, best_runtime = _best(raw), _best(runtime)
                row("raw nats-py responder", best_raw)
                row("CCC runtime endpoint", best_runtime)
                paired = sorted(b["rps"] / a["rps"] for a, b in zip(raw, runtime, strict=True))
                print(
                    f"  runtime / raw throughput: {best_runtime['rps'] / best_raw['rps']:.0%}"
                    f" best vs best, {statistics.median(paired):.0%} median of the"
                    f" {ROUNDS} paired rounds ({paired[0]:.0%} to {paired[-1]:.0%})"
                    + ("  (goal ≥ 85 %)" if in_flight == 100 else "")
                    + f"   added p50: {best_runtime['p50_ms'] - best_raw['p50_ms']:+.3f} ms"
                )

            if shutil.which("wrk") is None:
                print("\nwrk not found (apt-get install wrk): HTTP part skipped")
                return
            direct_port, gateway_port = free_port(), free_port()
            procs.append(spawn(TARGETS, "direct", str(direct_port)))
            procs.append(
                spawn(
                    "-m",
                    "ccc.gateway",
                    env={
                        "CCC_NATS_URL": url,
                        "CCC_GATEWAY_PORT": str(gateway_port),
                        "CCC_ADMIN_KEY": "bench",
                        "CCC_RATE_LIMIT_RPS": "1000000000",
                        "CCC_RATE_LIMIT_BURST": "1000000000",
                        "CCC_LOG_LEVEL": "WARNING",
                    },
                )
            )
            wait_port(direct_port)
            wait_port(gateway_port)
            time.sleep(1.0)
            for connections in (1, 50):
                print(
                    f"\nHTTP POST echo, wrk 1 thread, {connections} connection(s), {DURATION}, "
                    f"best of {ROUNDS} alternating rounds"
                )
                directs, vias = [], []
                for _ in range(ROUNDS):
                    directs.append(wrk(f"http://127.0.0.1:{direct_port}/echo", connections, {}))
                    vias.append(
                        wrk(
                            f"http://127.0.0.1:{gateway_port}/v1/orchestrate/benchecho/echo",
                            connections,
                            {"Authorization": "Bearer bench"},
                        )
                    )
                direct, via = _best(directs), _best(vias)
                row("direct FastAPI route", direct)
                row("gateway → NATS → service", via)
                print(
                    f"  gateway / direct throughput: {via['rps'] / direct['rps']:.0%}"
                    "  (goal ≥ 70 %)"
                )
                print(
                    f"  added p50: {via['p50_ms'] - direct['p50_ms']:+.3f} ms"
                    "  (goal ≤ 0.5 ms at 1 connection)"
                )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)


async def _run(coro):  # type: ignore[no-untyped-def]
    return await coro


if __name__ == "__main__":
    uvloop.install()
    main()
