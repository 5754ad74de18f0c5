"""Per-key token buckets: ``rate`` requests per second with bursts up to ``burst``.

Kept in the gateway process; with N gateway replicas a key gets up to N times its rate,
which docs/adr/0004 accepts in exchange for no bus round-trip per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: float | None = None) -> float:
        """Spend one token; returns 0 when allowed, else seconds until the next token."""
        rate = rate or self.rate
        burst = (
            max(1.0, min(float(self.burst), rate * 2)) if rate < self.rate else float(self.burst)
        )
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate
