"""Verification after a fix: only `open` shows a restarted daemon, which may need a moment."""

from __future__ import annotations

from bot.fixes.verify import compare, run_verify
from bot.models import Fix, PortKey, PortStatus
from config.inventory import Host

P25 = PortKey("inbound", "ipv4", 25)


def _fix(kind: str) -> Fix:
    return Fix(id="f", kind=kind, summary="s", commands=[["true"]], expected_allow=[P25])


def _port(outside: str) -> PortStatus:
    return PortStatus(port=25, direction="inbound", family="ipv4", outside=outside)


def test_a_refusal_passes_a_firewall_fix_but_not_a_daemon_fix():
    assert compare(_fix("firewall"), [_port("refused")]).achieved
    assert not compare(_fix("config"), [_port("refused")]).achieved
    assert not compare(_fix("service"), [_port("refused")]).achieved
    assert compare(_fix("service"), [_port("open")]).achieved


async def test_a_restarted_daemon_is_rechecked_until_it_answers():
    seen = iter(["refused", "refused", "open"])
    calls = []

    async def verifier(host, fix):
        calls.append(fix.kind)
        return [_port(next(seen))]

    result = await run_verify(verifier, Host(name="h", address="198.18.0.2"), _fix("service"), (0, 0, 0))
    assert result.achieved and len(calls) == 3


async def test_a_firewall_fix_is_checked_once_and_a_daemon_fix_gives_up():
    async def refused(host, fix):
        return [_port("refused")]

    host = Host(name="h", address="198.18.0.2")
    result = await run_verify(refused, host, _fix("config"), (0, 0))
    assert not result.achieved and result.missing == ["inbound ipv4 25: refused"]
    calls = []

    async def filtered(host, fix):
        calls.append(1)
        return [_port("filtered")]

    assert not (await run_verify(filtered, host, _fix("firewall"), (0, 0))).achieved and calls == [1]
