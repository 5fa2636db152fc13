"""Outbound mail for real, and who the provider is (issue 15, items 5 and 6), on real kernels.

- A host behind a router namespace connects to lab mail servers (listeners in the root
  namespace, named in a lab DNS server that mailcheck asks): the router drops 25 and
  rejects 465 (ICMP admin-prohibited), 587 gets through. The host firewall allows
  all: 25 and 465 are "blocked outside the host" (step 5); a target that does not
  resolve is said to be untested; then the host's own OUTPUT drop on 587 is the host
  firewall's, not the provider's.
- A fake metadata service on 169.254.169.254 inside the host's namespace (its lo)
  answers as AWS (IMDSv2: token first), Google, Azure, DigitalOcean or Hetzner would,
  refusing requests without the headers each requires; a lab RDAP server and a lab
  whois server say who holds the host's address. The provider finding names the
  provider and quotes its documented policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.models import Report
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.labdns import LabResolver
from tests.labowner import LabRegistry, rdap_network

pytestmark = pytest.mark.lab
METADATA = Path(__file__).resolve().parents[1] / "labmetadata.py"
# the guide's Part 1 (not Part 2's dns step, which asks RDAP about the addresses' PTRs too)
PART1 = ("tools", "services", "ports", "outbound", "resolver", "firewall", "provider", "conclusion")


def start_metadata(lab, provider: str):
    """The fake metadata service on 169.254.169.254, on the lab host's own lo."""
    lab.sh("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
    log = lab.workdir / "metadata.log"
    lab.popen("python3", str(METADATA), provider, stdout=open(log, "w"), stderr=open(log, "a"))
    deadline = time.monotonic() + 10
    while ":80 " not in lab.sh("ss", "-Hltn").stdout:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return log


async def check(lab, registry: LabRegistry | None = None, steps=None, **settings) -> Report:
    """mailcheck's check; the RDAP and whois servers are the lab's when given, else off."""
    s = Settings(**{"probe_timeout": 1.5, "connect_timeout": 3, **settings}, _env_file=None,
                 **({"rdap_url": registry.rdap_url, "whois_server": registry.whois_server}
                    if registry else {}))
    host = Host(name=f"mx{lab.index}", address=lab.ip, identity_file=lab.client_key,
                known_hosts=lab.known_hosts)
    return await Engine(s, Inventory()).check(host, steps=steps)


def found(report: Report, code: str) -> list:
    return [f for f in report.findings if f.code == code]


def outbound(report: Report) -> dict:
    return {(p.family, p.port): p.outside for p in report.ports if p.direction == "outbound"}


async def test_outbound_blocked_outside_the_host_with_the_providers_policy(routed):
    router = routed.router
    names = {"mx1.provider.lab.test": [router.outside_ip, router.outside_ip6],
             "smtp.provider.lab.test": [router.outside_ip, router.outside_ip6]}
    dns = LabResolver(router.outside_ip, names, port=5353).start()
    mailchecks = f"{router.outside_ip}:5353"  # MAILCHECK_RESOLVERS: mailcheck's own lookups
    log = start_metadata(routed, "aws")
    for tool in ("iptables", "ip6tables"):
        router.sh(tool, "-A", "FORWARD", "-p", "tcp", "--dport", "25", "-j", "DROP")
    router.sh("iptables", "-A", "FORWARD", "-p", "tcp", "--dport", "465", "-j", "REJECT",
              "--reject-with", "icmp-admin-prohibited")
    targets = ("mx1.provider.lab.test:25, mx1.provider.lab.test:465, smtp.provider.lab.test:587, "
               "nosuch.provider.lab.test:587")
    holder = rdap_network(routed.ip, "AMAZON-LAB", "Amazon Technologies Inc.")
    try:
        with router.outside_listener(), router.outside_listener(six=True):
            async with LabRegistry(router.outside_ip, rdap={routed.ip: holder}) as registry:
                report = await check(routed, registry, PART1, outbound_targets=targets, resolvers=mailchecks)
                assert registry.queries == [("rdap", routed.ip)]  # the provider step's, once
                routed.sh("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "587", "-j", "DROP")
                own = await check(routed, registry, PART1, outbound_targets=targets, resolvers=mailchecks)
    finally:
        dns.close()

    assert outbound(report) == {("ipv4", 25): "filtered", ("ipv4", 465): "rejected", ("ipv4", 587): "open",
                                ("ipv6", 25): "filtered", ("ipv6", 465): "open", ("ipv6", 587): "open"}
    by = {s.name: s for s in report.steps}
    assert f"$ nc -vz -w 3 {router.outside_ip} 465  (mx1.provider.lab.test) -> rejected: " \
           f"nc: connect to {router.outside_ip} port 465 (tcp) failed: No route to host" in by["outbound"].evidence
    [unresolved] = found(report, "outbound.unresolved")
    assert unresolved.summary.startswith("Outbound target nosuch.provider.lab.test:587 cannot be resolved "
                                         "from where mailcheck runs (")
    assert [f.severity for f in found(report, "outbound.filtered")] == ["error", "error"]
    assert found(report, "outbound.rejected")[0].summary == (
        f"Outbound 465/IPv4: connections from the host to mx1.provider.lab.test ({router.outside_ip}) are "
        "rejected (an ICMP answer: the host's own firewall or a router on the way)")

    blocked = found(report, "provider.outbound_blocked")
    assert [f.summary.split(" are blocked")[0] for f in blocked] == [
        "Outbound port(s) 25, 465 (ipv4)", "Outbound port(s) 25 (ipv6)"]
    assert all(f.severity == "error" for f in blocked)
    v4 = blocked[0]
    assert "its firewall allows them" in v4.summary and f"Outbound TCP from {routed.ip}" in v4.summary
    assert 'Amazon Web Services (EC2) documents: "By default, Amazon EC2 allows outbound traffic over ' \
           'port 25 only to private IPv4 addresses.' in v4.summary
    assert "(Source: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-resource-limits.html" in v4.summary
    assert f"outbound 465/ipv4: host firewall allow, outside rejected: mx1.provider.lab.test " \
           f"({router.outside_ip}): rejected" in v4.evidence

    [ident] = found(report, "provider.identified")
    assert ident.summary.startswith("The host runs at Amazon Web Services (EC2) (recognised by aws metadata: "
                                    "region eu-west-1, instance i-0123456789abcdef0).")
    assert f"address holder: {routed.ip} is held by Amazon Technologies Inc. (AMAZON-LAB, US)" in ident.evidence
    requests = log.read_text()
    assert "PUT /latest/api/token X-aws-ec2-metadata-token-ttl-seconds=yes" in requests
    assert "GET /latest/dynamic/instance-identity/document X-aws-ec2-metadata-token-ttl-seconds=no " \
           "X-aws-ec2-metadata-token=yes" in requests
    assert "X-aws-ec2-metadata-token:" not in json.dumps(report.to_json_dict())  # the token stays out

    # the host's own OUTPUT drop on 587: filtered too, but the host firewall's, not the provider's
    assert outbound(own)[("ipv4", 587)] == "filtered"
    p587 = next(p for p in own.ports if p.key == ("outbound", "ipv4", 587))
    assert p587.firewall == "block" and "587" in (p587.blocked_by or "")
    assert [f.summary.split(" are blocked")[0] for f in found(own, "provider.outbound_blocked")] == [
        "Outbound port(s) 25, 465 (ipv4)", "Outbound port(s) 25 (ipv6)"]


@pytest.mark.parametrize(("provider", "name", "how"), [
    ("gcp", "Google Cloud (Compute Engine)", "gcp metadata: zone europe-west1-b"),
    ("azure", "Microsoft Azure", "azure metadata: location westeurope"),
    ("digitalocean", "DigitalOcean", "digitalocean metadata: region ams3, droplet 2756294"),
    ("hetzner", "Hetzner", "hetzner metadata: region eu-central, server 12345678"),
])
async def test_metadata_of_each_provider_is_recognised_with_its_headers(labhost, provider, name, how):
    log = start_metadata(labhost, provider)
    report = await check(labhost, steps=["provider"])
    [f] = found(report, "provider.identified")
    assert f.summary.startswith(f"The host runs at {name} (recognised by {how}")
    if provider in ("gcp", "azure"):  # the service answers only with its header: it was sent
        assert {"gcp": "Metadata-Flavor=yes", "azure": "Metadata=yes"}[provider] in log.read_text()
    if provider == "hetzner":
        assert "mailcheck has no documented mail-port policy on file for Hetzner" in f.summary


async def test_no_metadata_then_the_holder_by_whois_when_rdap_has_none(labhost):
    whois = {labhost.ip: "% lab whois\ninetnum: 198.18.0.0 - 198.19.255.255\nnetname: HETZNER-LAB\n"
                         "org-name: Hetzner Online GmbH\ncountry: DE\n"}
    async with LabRegistry(labhost.outside_ip, whois=whois) as registry:
        report = await check(labhost, registry, steps=["provider"])
        assert registry.queries == [("rdap", labhost.ip), ("whois", labhost.ip)]
    [f] = found(report, "provider.identified")
    assert f.summary.startswith("The host runs at Hetzner (recognised by the address's holder "
                                f"(Hetzner Online GmbH, whois {registry.whois_server})")
    assert "GET http://169.254.169.254/computeMetadata/v1/instance/zone (Metadata-Flavor: Google): curl: " \
           "(7) Failed to connect" in report.steps[0].evidence

    report = await check(labhost, steps=["provider"])  # RDAP and whois off (the tests' default)
    [f] = found(report, "provider.unknown")
    assert "no cloud metadata service answered" in f.summary and "both off" in f.summary
