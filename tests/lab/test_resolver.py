"""The host's own resolver, on a real unbound (issue 15, item 3): made silent, then
refusing, then working, each seen by the resolver step from the host, and a slow
greeting tied to the silent one (Exim's reverse lookup of the prober waits on it).
"""

from __future__ import annotations

import pytest

from bot.engine import Engine
from bot.models import Report
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.labresolver import make_host_with_unbound

pytestmark = pytest.mark.lab
WAIT = 4  # resolv.conf's timeout: Exim's reverse lookup of the prober waits this long on a silent resolver


@pytest.fixture
def resolved(client_key):
    host, unbound = make_host_with_unbound(client_key)
    try:
        yield host, unbound
    finally:
        unbound.close()
        host.close()


async def check(lab) -> Report:
    settings = Settings(probe_timeout=1.5, connect_timeout=3, _env_file=None)
    host = Host(name=f"mx{lab.index}", address=lab.ip, identity_file=lab.client_key,
                known_hosts=lab.known_hosts)
    return await Engine(settings, Inventory()).check(host, steps=["resolver"])


def codes(report: Report) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


def port25(report: Report):
    return next(p for p in report.ports if p.key == ("inbound", "ipv4", 25))


async def test_a_real_resolver_made_silent_then_refusing_then_working(resolved):
    host, unbound = resolved
    (host.etc / "resolv.conf").write_text(f"nameserver {unbound.address}\noptions timeout:{WAIT} attempts:1\n")
    host.start_exim("public", ports=(25,))
    ns = unbound.address

    unbound.silent()
    report = await check(host)
    [step] = report.steps
    assert (step.name, step.status, step.summary) == ("resolver", "fail", f"{ns} silent")
    [silent] = codes(report)["dns.resolver_silent"]
    assert silent.severity == "error"
    assert f"Nameserver {ns} (resolv.conf #1) does not answer (no reply within 2 s)" in silent.summary
    assert "outbound mail cannot find MX hosts" in silent.summary
    assert f"each lookup waits {WAIT} s before it fails" in silent.summary
    assert "greeting" in silent.summary
    assert silent.evidence.count("no reply within 2 s") == 3  # A, MX and the prober's PTR
    p = port25(report)
    assert p.outside == "open" and p.greeting_wait == "silence" and WAIT - 0.5 <= p.greeting_time <= 2 * WAIT + 2
    [tied] = codes(report)["dns.resolver_delays_greeting"]
    assert tied.summary.startswith(f"The slow greetings on 25/IPv4 ({p.greeting_time:.1f} s), 25/IPv6 (")
    assert f"are the host's resolver: {ns} does not answer the reverse lookup of " in tied.summary
    assert tied.evidence.endswith("no reply within 2 s")

    unbound.refusing()
    report = await check(host)
    assert (report.steps[0].status, report.steps[0].summary) == ("fail", f"{ns} refusing")
    [refusing] = codes(report)["dns.resolver_refusing"]
    assert refusing.severity == "error" and "REFUSED" in refusing.summary
    assert refusing.evidence.count("REFUSED") == 3
    assert port25(report).greeting_time < 2 and "dns.resolver_delays_greeting" not in codes(report)

    unbound.working()
    report = await check(host)
    assert (report.steps[0].status, report.steps[0].summary) == ("ok", f"{ns} answering")
    assert not [c for c in codes(report) if c.startswith("dns.")]
    assert "PTR" in report.steps[0].evidence and "NOERROR" in report.steps[0].evidence
    assert port25(report).greeting_time < 2
