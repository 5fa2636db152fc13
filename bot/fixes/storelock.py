"""The store's lock of a host while a fix or a rollback runs: taken, kept fresh, released.

The lock lives `LOCK_TTL` seconds and its holder renews it every `LOCK_TTL / 4` while
it works (one conditional update: only while it still holds it). A holder that dies
(SIGKILL, a lost machine) stops renewing, so its lock lapses within LOCK_TTL and
another replica's reconcile may take the host (bot/fixes/reconcile.py), on any machine,
instead of waiting out a lock sized for the longest apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from bot.store import Store

log = logging.getLogger(__name__)
LOCK_TTL = 60.0


async def take(store: Store, host: str, holder: str, wait: float) -> str | None:
    """Take the host's lock, waiting up to `wait` s: None when taken, else who holds it."""
    deadline = time.monotonic() + wait
    while True:
        held = await store.acquire_lock(host, holder, LOCK_TTL)
        if held is None:
            return None
        if time.monotonic() >= deadline:
            return held.holder
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def kept(store: Store, host: str, holder: str) -> AsyncIterator[None]:
    """While the block runs, renew the lock `take` got; release it after."""
    renew = asyncio.create_task(_renew(store, host, holder))
    try:
        yield
    finally:
        renew.cancel()
        await asyncio.gather(renew, return_exceptions=True)
        await store.release_lock(host, holder)


async def _renew(store: Store, host: str, holder: str) -> None:
    while True:
        await asyncio.sleep(LOCK_TTL / 4)
        try:
            if not await store.take_over_lock(host, holder, holder, LOCK_TTL):
                log.error("the store lock of %s is no longer held by %s", host, holder)
                return
        except Exception:  # noqa: BLE001 - the next round tries again; the lock lapses if none do
            log.exception("renewing the store lock of %s failed", host)
