"""What `serve` counts for Prometheus (GET /metrics) and what /readyz asks.

One registry per app (tests run several apps in one process): checks by verdict
(`error` when a check could not finish), check durations, fix applies by outcome
(ApplyOutcome.status), Slack Web API errors by method and error code, and 429s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

CHECK_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.checks = Counter("mailcheck_checks", "Checks finished, by verdict", ["verdict"],
                              registry=r)
        self.check_seconds = Histogram("mailcheck_check_duration_seconds",
                                       "Wall time of a check, from start to report",
                                       buckets=CHECK_BUCKETS, registry=r)
        self.fixes = Counter("mailcheck_fixes", "Fix applies, by outcome", ["outcome"], registry=r)
        self.slack_errors = Counter("mailcheck_slack_api_errors",
                                    "Slack Web API calls that failed, by method and error",
                                    ["method", "error"], registry=r)
        self.slack_429 = Counter("mailcheck_slack_rate_limited",
                                 "Slack Web API answers 429 (rate limited), by method", ["method"],
                                 registry=r)

    def check_done(self, verdict: str, seconds: float) -> None:
        self.checks.labels(verdict=verdict).inc()
        self.check_seconds.observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class Readiness:
    """/readyz: the store answers and Slack accepts the token (auth.test, its answer kept
    for `ttl` s so probes do not spend the Web API's rate limit)."""

    def __init__(self, ping_store: Callable[[], Awaitable[None]],
                 auth_test: Callable[[], Awaitable[object]], ttl: float = 15.0,
                 timeout: float = 5.0) -> None:
        self.ping_store, self.auth_test, self.ttl, self.timeout = ping_store, auth_test, ttl, timeout
        self._slack: tuple[float, str] | None = None

    async def state(self) -> dict:
        store = await self._probe(self.ping_store)
        if self._slack is None or time.monotonic() - self._slack[0] > self.ttl:
            self._slack = (time.monotonic(), await self._probe(self.auth_test))
        slack = self._slack[1]
        return {"ok": store == "ok" and slack == "ok", "store": store, "slack": slack}

    async def _probe(self, call: Callable[[], Awaitable[object]]) -> str:
        try:
            await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            return f"no answer within {self.timeout:.0f}s"
        except Exception as e:  # noqa: BLE001 - said in the answer, not raised
            error = getattr(getattr(e, "response", None), "get", lambda _k: None)("error")
            return f"{type(e).__name__}: {error or e}"[:300]
        return "ok"
