"""A lab RDAP server and a lab whois server: who holds a lab address, asked in the lab.

Both listen on a lab address of this machine's root namespace (the outside end of a
lab host's link), on port 0, in the test's own event loop; mailcheck gets them as
MAILCHECK_RDAP_URL / MAILCHECK_WHOIS_SERVER, so no test asks the internet. Every
query is kept in `queries`.

    async with LabRegistry(host.outside_ip, rdap={ADDRESS: RDAP_JSON}, whois={ADDRESS: TEXT}) as reg:
        Settings(rdap_url=reg.rdap_url, whois_server=reg.whois_server)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def served(app: web.Application, address: str = "127.0.0.1") -> AsyncIterator[str]:
    """`app` listening on address, port 0, for the block: its base URL, http://ADDRESS:PORT
    (the lab registry's, and the unit tests' one-off servers)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, 0)
        await site.start()
        yield f"http://{address}:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def rdap_network(address: str, name: str, holder: str, country: str = "US") -> dict:
    """An RDAP ip network object (RFC 9083 section 5.4) with one registrant entity."""
    return {"objectClassName": "ip network", "handle": f"NET-{name}", "startAddress": address,
            "endAddress": address, "ipVersion": "v6" if ":" in address else "v4", "name": name,
            "type": "DIRECT ALLOCATION", "country": country, "rdapConformance": ["rdap_level_0"],
            "entities": [{"objectClassName": "entity", "handle": "LAB-1", "roles": ["registrant"],
                          "vcardArray": ["vcard", [["version", {}, "text", "4.0"],
                                                   ["fn", {}, "text", holder]]]}]}


class LabRegistry:
    def __init__(self, address: str, *, rdap: dict[str, dict] | None = None,
                 whois: dict[str, str] | None = None) -> None:
        self.address, self.rdap, self.whois = address, rdap or {}, whois or {}
        self.queries: list[tuple[str, str]] = []  # (rdap | whois, address)
        self._http = contextlib.AsyncExitStack()
        self._whois: asyncio.Server | None = None
        self.rdap_url = self.whois_server = ""

    async def __aenter__(self) -> LabRegistry:
        app = web.Application()
        app.router.add_get("/ip/{address}", self._rdap_answer)
        self.rdap_url = await self._http.enter_async_context(served(app, self.address)) + "/"
        self._whois = await asyncio.start_server(self._whois_answer, self.address, 0)
        self.whois_server = f"{self.address}:{self._whois.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        if self._whois is not None:
            self._whois.close()
            await self._whois.wait_closed()
        await self._http.aclose()

    async def _rdap_answer(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        self.queries.append(("rdap", address))
        if address not in self.rdap:
            return web.Response(status=404, text=json.dumps({"errorCode": 404, "title": "Not Found"}),
                                content_type="application/rdap+json")
        return web.Response(text=json.dumps(self.rdap[address]), content_type="application/rdap+json")

    async def _whois_answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = (await reader.readline()).decode().strip()
        self.queries.append(("whois", address))
        writer.write(self.whois.get(address, "% no entries found\n").encode())
        await writer.drain()
        writer.close()
