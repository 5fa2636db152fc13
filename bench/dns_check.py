"""DNS check speed: a whole domain check costs at most one resolver timeout.

In the DNS lab (tests/dnslab.py: knot, unbound, rbldnsd), one world with
everything a domain check asks about (MX, SPF with includes, DKIM, DMARC
with an external rua, MTA-STS + TLS-RPT, a signed TLSA, PTR, three DNSBL
zones), then the whole check (check_domain + check_address + check_dnsbl, as
the coming dns/reputation steps run them) with lifetime T per lookup:

  lab          MAILCHECK_RESOLVERS = the lab's validating resolver
  silent       MAILCHECK_RESOLVERS = a UDP socket that never answers
  silent+lab   both, the silent one first (each gets T/2; the one that
               answers is preferred for the rest of the check)
  sequential   the same questions the check asked, one after another,
               against the silent server: what a non-concurrent check costs

Usage (root): python3 bench/dns_check.py [--timeout T] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.dns.dkim_config import Signer  # noqa: E402
from bot.dns.dnsbl import check_dnsbl  # noqa: E402
from bot.dns.domain import DnsContext, DnsFacts, check_address, check_domain  # noqa: E402
from bot.dns.http import Https  # noqa: E402
from bot.dns.resolver import Resolver  # noqa: E402
from tests.dnslab import TEST_ENTRIES, DnsLab, Zone, missing_prerequisites  # noqa: E402
from tests.lab.dnsworld import lab_zone, provider_zone, ptr_zone  # noqa: E402

ZONES = ["bl.test", "bl2.test", "bl3.test"]


def build_world(lab: DnsLab) -> tuple[str, DnsFacts]:
    host = lab.ip(25)
    body = (f"@ MX 10 mail\nmail A {host}\nmta-sts A {lab.web}\n"
            '@ TXT "v=spf1 a:mail.example.test include:_spf.example.test -all"\n'
            '_spf TXT "v=spf1 include:_s1.example.test include:_s2.example.test ~all"\n'
            '_s1 TXT "v=spf1 ip4:192.0.2.0/24 -all"\n_s2 TXT "v=spf1 mx -all"\n'
            '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:d@reports.test"\n'
            's1._domainkey TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
            '_mta-sts TXT "v=STSv1; id=1"\n_smtp._tls TXT "v=TLSRPTv1; rua=mailto:t@example.test"\n'
            "_25._tcp.mail TLSA 3 1 1 " + "ab" * 32)
    lab.load([lab_zone(lab), provider_zone(), Zone("example.test", body), ptr_zone(host, "mail.example.test"),
              Zone("reports.test", "@ MX 0 .", signed=False)],
             dnsbl={z: dict(TEST_ENTRIES) for z in ZONES},
             files={"mta-sts.example.test/.well-known/mta-sts.txt":
                    "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"})
    facts = DnsFacts([host], "mail.example.test", "mail.example.test",
                      [Signer("exim", "s1", "example.test", None, "bench")])
    return host, facts


async def whole_check(ctx: DnsContext, host: str, facts: DnsFacts) -> str:
    """The whole check; returns what it concluded, in short, so each scenario is asserted."""
    dom, addr, bl = await asyncio.gather(check_domain(ctx, "example.test", facts),
                                         check_address(ctx, host, facts),
                                         check_dnsbl(ctx.resolver, ZONES, [host]))
    return (f"mx={dom.mx.ours or dom.mx.lookup_failed} spf={dom.spf.verdicts[host].result} "
            f"sts={dom.mta_sts.policy.mode if dom.mta_sts.policy else dom.mta_sts.lookup_failed} "
            f"dane={[d.verdict for d in dom.dane]} fcrdns={addr.ptr.fcrdns} "
            f"dnsbl={sorted({x.state for x in bl})}")


EXPECT = {"lab": "mx=['mail.example.test'] spf=pass sts=enforce dane=['unchecked'] fcrdns=True "
                 "dnsbl=['not_listed']",
          "silent": "mx=True spf=temperror sts=True dane=[] fcrdns=None dnsbl=['failed']"}
EXPECT["silent+lab"] = EXPECT["lab"]


async def timed(resolvers: str, lab: DnsLab, host: str, facts: DnsFacts, lifetime: float):
    ctx = DnsContext(Resolver(resolvers, lifetime), "https://rdap.lab.test/", Https(lab.ca_file, lifetime))
    t0 = time.monotonic()
    said = await whole_check(ctx, host, facts)
    return time.monotonic() - t0, list(ctx.resolver._cache), said


async def sequential(resolvers: str, questions, lifetime: float) -> float:
    r = Resolver(resolvers, lifetime)
    t0 = time.monotonic()
    for name, rdtype in questions:
        await r.lookup(name, rdtype)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if missing := missing_prerequisites():
        sys.exit("needs: " + ", ".join(missing))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # reads nothing, answers nothing
    silent_ns = f"127.0.0.1:{silent.getsockname()[1]}"
    lab = DnsLab().start()
    try:
        host, facts = build_world(lab)
        rows: dict[str, list[float]] = {}
        questions = []
        for _ in range(args.runs):
            for label, servers in (("lab", lab.resolver), ("silent", silent_ns),
                                   ("silent+lab", f"{silent_ns},{lab.resolver}")):
                elapsed, asked, said = asyncio.run(timed(servers, lab, host, facts, args.timeout))
                assert said == EXPECT[label], f"{label}: {said}"
                rows.setdefault(label, []).append(elapsed)
                if label == "silent":
                    questions = asked
        seq = asyncio.run(sequential(silent_ns, questions, args.timeout))
        rows["sequential"] = [seq]
    finally:
        lab.close()
        silent.close()
    print(f"lifetime T = {args.timeout:g} s; questions asked with a silent server: {len(questions)}")
    print("| scenario | median s | runs | median / T |\n|---|---|---|---|")
    for label, times in rows.items():
        med = statistics.median(times)
        print(f"| {label} | {med:.2f} | {', '.join(f'{t:.2f}' for t in times)} | {med / args.timeout:.2f} |")
    ratio = rows["sequential"][0] / statistics.median(rows["silent"])
    print(f"\nsequential / concurrent with a silent server: {ratio:.1f}x")


if __name__ == "__main__":
    main()
