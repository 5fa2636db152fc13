"""Posting to Slack: chat.postMessage / chat.update paced per channel, 429s
retried after Retry-After, and the response_url for where the bot may not post."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

NOT_IN_CHANNEL = ("not_in_channel", "channel_not_found")


class SlackPoster:
    def __init__(self, client: AsyncWebClient, *, interval: float = 1.0, retries: int = 3,
                 max_wait: float = 60.0) -> None:
        self.client = client
        self.interval = interval
        self.retries = retries
        self.max_wait = max_wait
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None

    async def call(self, method: str, **kw: Any) -> Any:
        """One Web API call; a 429 is retried after its Retry-After (capped)."""
        for attempt in range(self.retries + 1):
            try:
                return await getattr(self.client, method)(**kw)
            except SlackApiError as e:
                if e.response.status_code != 429 or attempt == self.retries:
                    raise
                wait = min(float(e.response.headers.get("Retry-After", "1") or 1), self.max_wait)
                log.warning("%s rate-limited; retrying in %.1fs", method, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def paced(self, channel: str, method: str, **kw: Any) -> Any:
        """A call on `channel` at most once per `interval` (Slack's ~1/s per channel)."""
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            delay = self._next.get(channel, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                return await self.call(method, channel=channel, **kw)
            finally:
                self._next[channel] = time.monotonic() + self.interval

    async def post(self, channel: str, blocks: list[dict], text: str,
                   thread_ts: str | None = None) -> tuple[str, str]:
        """(channel, ts) of the new message: a user id as `channel` posts in the app's direct
        message with them, and Slack answers with that conversation's id (D…)."""
        kw = {"thread_ts": thread_ts} if thread_ts else {}
        resp = await self.paced(channel, "chat_postMessage", blocks=blocks, text=text, **kw)
        return resp.get("channel") or channel, resp["ts"]

    async def update(self, channel: str, ts: str, blocks: list[dict], text: str) -> None:
        await self.paced(channel, "chat_update", ts=ts, blocks=blocks, text=text)

    async def respond(self, response_url: str, payload: dict) -> None:
        """POST to a response_url (5 uses in 30 minutes: use sparingly)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        async with self._http.post(response_url, json=payload) as resp:
            if resp.status >= 400:
                log.error("response_url answered %s: %s", resp.status, await resp.text())

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class LiveMessage:
    """One channel message updated in place. `show()` never blocks the check:
    it keeps only the newest content and a single flusher sends it, paced."""

    def __init__(self, poster: SlackPoster, channel: str, ts: str) -> None:
        self.poster, self.channel, self.ts = poster, channel, ts
        self._latest: tuple[list[dict], str] | None = None
        self._flusher: asyncio.Task | None = None

    def show(self, blocks: list[dict], text: str) -> None:
        self._latest = (blocks, text)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._latest is not None:
            blocks, text = self._latest
            self._latest = None
            try:
                await self.poster.update(self.channel, self.ts, blocks, text)
            except SlackApiError as e:
                log.warning("progress update failed: %s", e.response.get("error"))

    async def finish(self, blocks: list[dict], text: str) -> None:
        """The final content; waits for an update in flight, then sends this one."""
        self._latest = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.poster.update(self.channel, self.ts, blocks, text)


class ResponseUrlMessage:
    """Where the bot cannot post (not in the channel): no live progress, the
    final report goes to the response_url (one of its 5 uses)."""

    def __init__(self, poster: SlackPoster, response_url: str) -> None:
        self.poster, self.response_url = poster, response_url

    def show(self, blocks: list[dict], text: str) -> None:
        return None

    async def finish(self, blocks: list[dict], text: str) -> None:
        await self.poster.respond(self.response_url, {
            "response_type": "in_channel", "replace_original": False, "blocks": blocks, "text": text})
