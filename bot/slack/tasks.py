"""Background work the app keeps references to: timeouts, clean shutdown, dedupe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Tasks kept in a set (so they are not garbage-collected mid-run), each
    with a timeout; `shutdown()` cancels them and waits for their cleanup, except
    those spawned with `drain=True` (fixes), which it first lets finish for a while."""

    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = timeout
        self._tasks: set[asyncio.Task] = set()
        self._drained: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, timeout: float | None = None,
              name: str | None = None, drain: bool = False) -> asyncio.Task:
        task = asyncio.create_task(self._guard(coro, timeout or self.timeout), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if drain:
            self._drained.add(task)
            task.add_done_callback(self._drained.discard)
        return task

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, Any], limit: float) -> None:
        try:
            await asyncio.wait_for(coro, limit)
        except TimeoutError:
            log.error("background task timed out after %.0fs", limit)
        except Exception:
            log.exception("background task failed")

    def __len__(self) -> int:
        return len(self._tasks)

    async def join(self) -> None:
        """Wait for every task running now (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self, grace: float = 10.0, drain: float = 0.0) -> None:
        """Cancel every task but the drained ones; give those up to `drain` s to finish (an
        apply in progress ends and reports), then cancel what is left."""
        keep = set(self._drained)
        for t in self._tasks - keep:
            t.cancel()
        if keep:
            # a warning: the operator who stops serve sees why the stop takes a while
            log.warning("shutting down: waiting up to %.0fs for %d fix(es) in progress",
                        drain, len(keep))
            _done, late = await asyncio.wait(keep, timeout=drain)
            if late:
                log.error("%d fix(es) still running after %.0fs: cancelled (the next start "
                          "reconciles them)", len(late), drain)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


class Seen:
    """Remembers delivery keys for a while: the second delivery of one click
    or command (a retry, a double submit) is recognised and ignored."""

    def __init__(self, ttl: float = 600.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._keys: OrderedDict[str, float] = OrderedDict()

    def first(self, key: str) -> bool:
        """True the first time `key` is seen within the ttl."""
        now = time.monotonic()
        while self._keys and (len(self._keys) > self.size
                              or next(iter(self._keys.values())) < now - self.ttl):
            self._keys.popitem(last=False)
        if not key or key in self._keys:
            return not key
        self._keys[key] = now
        return True
