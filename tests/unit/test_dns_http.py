"""bot.dns.http.fetch against a real HTTP server on loopback: the body must arrive whole
(or be refused as too large), however the server splits it over the wire."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bot.dns import http
from bot.dns.http import Https, fetch
from bot.dns.mtasts import parse_policy
from bot.dns.resolver import Resolver
from tests.labowner import served

POLICY = ["version: STSv1\n", "mode: enforce\n", "mx: mail.example.test\n", "max_age: 86400\n"]


async def _fetch_from(handler) -> http.Fetched:
    """fetch() of GET /p from a loopback server answering with `handler`."""
    app = web.Application()
    app.router.add_get("/p", handler)
    async with served(app) as base:
        return await fetch(Resolver("127.0.0.1:9"), f"{base}/p", Https(seconds=5))


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for line in POLICY:            # a server that flushes line by line
        await resp.write(line.encode())
        await asyncio.sleep(0.05)
    await resp.write_eof()
    return resp


async def test_a_policy_sent_in_pieces_is_read_whole():
    got = await _fetch_from(_chunked)
    assert got.error == "" and got.text == "".join(POLICY)
    assert parse_policy(got.text).mx == ("mail.example.test",)


async def test_a_body_over_the_limit_is_an_error_not_a_truncated_policy(monkeypatch):
    monkeypatch.setattr(http, "MAX_BYTES", 40)

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="".join(POLICY) * 3)
    got = await _fetch_from(big)
    assert got.text == "" and "40 bytes" in got.error


async def test_mta_sts_host_that_does_not_resolve_is_unknown_not_an_invalid_policy():
    """Our resolver timing out on mta-sts.DOMAIN says nothing about the policy: 'cannot tell'
    (dns.lookup_failed), never dns.mta_sts_invalid. Neither A nor AAAA answered: 'no address'
    would be a guess too."""
    from bot.dns.issues import sts_issues
    from bot.dns.mtasts import check_mta_sts
    from tests.unit.dnsdata import StaticResolver

    for aaaa in ("timeout", None):
        records = {"_mta-sts.example.test TXT": ['"v=STSv1; id=2026"'],
                   "mta-sts.example.test A": "timeout"}
        if aaaa:
            records["mta-sts.example.test AAAA"] = aaaa
        sts = await check_mta_sts(StaticResolver(records), "example.test", Https(seconds=3))
        assert sts.policy is None and "timeout" in sts.policy_error and "no address" not in sts.policy_error
        codes = [i.code for i in sts_issues(type("R", (), {"mta_sts": sts, "domain": "example.test",
                                                              "provider": None})())]
        assert codes == ["dns.lookup_failed"], codes
