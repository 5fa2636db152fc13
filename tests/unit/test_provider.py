"""Who the provider is (issue 15, item 6): metadata answers, the address's holder, the policy table.

tests/unit/data/issue15/curl.json: `curl -sS -i -m 1` from a lab host, against nothing
(no metadata service: curl's own error) and against tests/labmetadata.py (AWS IMDSv2
with and without the token, Google with and without Metadata-Flavor). The AWS script's
output is its second curl's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot.checks.provider import ENDPOINTS, ProviderCheck, identify, parse_curl
from bot.checks.providers import PROVIDERS, by_owner
from bot.dns.http import Https
from bot.dns.owners import address_owner
from bot.dns.resolver import Resolver
from bot.models import CommandResult
from bot.owner import Owner, OwnerLookup, parse_rdap, parse_whois, referral
from tests.labowner import LabRegistry, rdap_network, served
from tests.unit.checkdata import make_input, result, results

CURL = json.loads((Path(__file__).parent / "data" / "issue15" / "curl.json").read_text())


def curl(name: str, argv=None, crlf: bool = False) -> CommandResult:
    d = CURL[name]
    out = d["stdout"].replace("\n", "\r\n") if crlf else d["stdout"]
    return result(tuple(argv or d["argv"]), out, d["rc"], d["stderr"])


def test_curl_answers_read():
    none = parse_curl(curl("none"))
    assert none.status is None and none.error.startswith("curl: (7) Failed to connect to 169.254.169.254")
    doc = parse_curl(curl("aws_doc", crlf=True))
    assert doc.status == 200 and json.loads(doc.body)["region"] == "eu-west-1"
    assert parse_curl(curl("aws_doc_notoken")).status == 401
    gcp = parse_curl(curl("gcp_zone"))
    assert gcp.headers["metadata-flavor"] == "Google" and gcp.body == "projects/123456789012/zones/europe-west1-b"
    assert parse_curl(result(("curl",), exit_status=127)).error == "curl is not installed"


def test_aws_imdsv2_is_one_fixed_script_and_its_answer_is_read():
    aws = ENDPOINTS[0]
    sh, c, script = aws.argv()
    assert (sh, c) == ("sh", "-c") and aws.argv() == aws.argv()  # the same text every time
    assert script.startswith('t=$(curl -fsS -m 1 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" '
                             "http://169.254.169.254/latest/api/token) && curl -sS -i -m 1 -H "
                             '"X-aws-ec2-metadata-token: $t" ')
    assert script.endswith("http://169.254.169.254/latest/dynamic/instance-identity/document")
    ident = identify(results(curl("aws_doc", aws.argv())), None)
    assert ident.provider.key == "aws"
    assert ident.how == "aws metadata: region eu-west-1, instance i-0123456789abcdef0"
    no_token = identify(results(curl("aws_doc_notoken", aws.argv())), None)
    assert no_token.provider is None and no_token.lines[0].endswith(": HTTP 401")
    failed = result(aws.argv(), "", 7, "curl: (7) Failed to connect to 169.254.169.254 port 80 after "
                                        "0 ms: Couldn't connect to server\n")
    assert "Couldn't connect to server" in identify(results(failed), None).lines[0]


def test_an_answer_counts_only_in_its_services_own_shape():
    gcp = ENDPOINTS[1]
    assert identify(results(curl("gcp_zone", gcp.argv())), None).provider.key == "gcp"
    bare = results(result(gcp.argv(), "HTTP/1.0 200 OK\n\nprojects/1/zones/europe-west1-b"))
    assert identify(bare, None).provider is None  # no Metadata-Flavor: Google in the answer
    assert identify(results(curl("aws_doc_notoken", ENDPOINTS[0].argv())), None).provider is None


def test_an_openstack_cloud_is_named_by_its_address_holder_and_the_holder_alone_suffices():
    openstack = next(e for e in ENDPOINTS if e.key == "openstack")
    res = results(result(openstack.argv(), 'HTTP/1.1 200 OK\n\n{"uuid": "8a1c", "availability_zone": "nova"}'))
    ovh = Owner("198.18.2.2", "OVH SAS", "OVH-CLOUD", "FR", "RDAP lab")
    assert identify(res, ovh).provider.key == "ovh"
    assert identify(res, None).provider.key == "openstack"
    only_owner = identify({}, Owner("198.18.2.2", "Hetzner Online GmbH", "HETZNER-CLOUD", "DE", "whois lab"))
    assert only_owner.provider.key == "hetzner" and only_owner.how.startswith("the address's holder (Hetzner")


def test_the_policy_table_cites_a_page_per_row_and_is_quoted():
    for p in PROVIDERS.values():
        if p.policy is not None:
            assert p.policy.source.startswith("https://") and p.policy.quote and p.policy.lift
            assert set(p.policy.ports) <= {25, 465, 587}
    assert {k for k, p in PROVIDERS.items() if p.policy} == {"aws", "gcp", "azure", "digitalocean", "linode"}
    assert by_owner("Amazon.com, Inc.", "AMAZON-4").key == "aws" and by_owner("Example GmbH") is None
    res = results(curl("aws_doc", ENDPOINTS[0].argv()))
    inp = make_input(res)
    out = ProviderCheck().evaluate(type(inp)(**{**inp.__dict__, "owner": None}))
    [f] = out.findings
    assert f.code == "provider.identified" and "Amazon EC2 allows outbound traffic over port 25 only" in f.summary
    none = ProviderCheck().evaluate(make_input(results(curl("none", ENDPOINTS[4].argv()))))
    assert [x.code for x in none.findings] == ["provider.unknown"]


RDAP_ARIN = {"objectClassName": "ip network", "handle": "NET-3-0-0-0-1", "name": "AMAZON-2011L",
             "startAddress": "3.0.0.0", "endAddress": "3.127.255.255", "country": None,
             "entities": [{"roles": ["registrant"], "vcardArray": ["vcard", [["version", {}, "text", "4.0"],
                                                                              ["fn", {}, "text", "Amazon Technologies Inc."]]]},
                          {"roles": ["abuse"], "vcardArray": ["vcard", [["fn", {}, "text", "Abuse"]]]}]}


def test_rdap_and_whois_answers_read():
    assert parse_rdap(RDAP_ARIN, "3.5.1.1", "RDAP x") == Owner(
        "3.5.1.1", "Amazon Technologies Inc.", "AMAZON-2011L", None, "RDAP x")
    assert parse_rdap({"handle": "X"}, "3.5.1.1", "s").name == "X"
    assert parse_rdap({}, "3.5.1.1", "s").error == "the RDAP answer names no holder"
    ripe = "% RIPE\ninetnum: 5.9.0.0 - 5.9.255.255\nnetname: HETZNER-fsn1-dc10\ndescr: Hetzner\n" \
           "country: DE\norg-name: Hetzner Online GmbH\n"
    assert parse_whois(ripe, "5.9.1.1", "whois w") == Owner("5.9.1.1", "Hetzner Online GmbH",
                                                           "HETZNER-fsn1-dc10", "DE", "whois w")
    assert referral("refer:        whois.ripe.net\n") == "whois.ripe.net"
    assert referral("ReferralServer:  whois://whois.ripe.net\n") == "whois.ripe.net"


async def test_owner_lookup_rdap_then_whois_and_never_a_private_address():
    async with LabRegistry("127.0.0.1", rdap={"198.18.2.2": rdap_network("198.18.2.2", "LAB", "Lab Holder")},
                           whois={"198.18.2.3": "org-name: Whois Holder\n"}) as reg:
        lookup = OwnerLookup(reg.rdap_url, reg.whois_server, 2.0)
        a, b = await asyncio.gather(lookup.lookup("198.18.2.2"), lookup.lookup("198.18.2.3"))
        assert (a.name, a.source) == ("Lab Holder", f"RDAP {reg.rdap_url}ip/198.18.2.2")
        assert (b.name, b.source) == ("Whois Holder", f"whois {reg.whois_server}")
        nothing = await lookup.lookup("198.18.2.4")
        assert nothing.name is None and "HTTP 404" in nothing.error and "names no holder" in nothing.error
        private = await lookup.lookup("10.1.2.3")
        assert private.error == "not a public address: no registry holds it"
        assert ("rdap", "10.1.2.3") not in reg.queries
    off = await OwnerLookup("off", "off").lookup("198.18.2.2")
    assert "both off" in off.error


async def test_an_rdap_answer_that_is_not_an_object_is_an_unknown_holder_not_a_crash():
    """A registry's malformed answer (JSON, but a list, or entities that are not objects)
    reaches both owner lookups as 'unknown', never as an exception that ends the check."""
    from bot.dns.http import Https
    from bot.dns.owners import address_owner
    from bot.dns.resolver import Resolver

    async with LabRegistry("127.0.0.1", rdap={"198.18.2.5": [], "198.18.2.6": {
            "name": "LAB-NET", "entities": [None, "x", {"roles": "registrant"}]}}) as reg:
        lookup = OwnerLookup(reg.rdap_url, "off", 2.0)
        listed = await lookup.lookup("198.18.2.5")
        assert listed.name is None and "JSON list, not an RDAP object" in listed.error
        assert (await lookup.lookup("198.18.2.6")).name == "LAB-NET"
        resolver = Resolver("127.0.0.1", 2.0)
        try:
            owner = await address_owner(resolver, "198.18.2.5", reg.rdap_url, Https(None, 2.0))
        finally:
            await resolver.close()
        assert owner.name.startswith("unknown (RDAP ") and "not an RDAP object" in owner.name


async def test_a_malformed_rdap_answer_is_no_holder_and_whois_still_asked():
    """A registry's answer of the wrong shape (an array, entities that are not objects, a name
    that is not a string, JSON nested past Python's stack) crashed the owner lookup, and with
    it the whole check run (Gather.wait re-raises the owner task's exception)."""
    from aiohttp import web
    bad = ["[]", '{"entities": ["x"]}', '{"entities": {"a": 1}}', '{"name": {"x": 1}, "country": 7}',
           '{"entities": [{"roles": ["registrant"], "vcardArray": 5}], "handle": ["A"]}', "[" * 60000]

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=bad[int(request.match_info["n"])], content_type="application/rdap+json")

    app = web.Application()
    app.router.add_get("/{n}/ip/{address}", answer)
    async with served(app) as base:
        async with LabRegistry("127.0.0.1", whois={"198.18.2.2": "OrgName: Whois Holder\n"}) as reg:
            for n in range(len(bad)):
                owner = await OwnerLookup(f"{base}/{n}/", reg.whois_server, 2.0).lookup("198.18.2.2")
                assert (owner.name, owner.source) == ("Whois Holder", f"whois {reg.whois_server}"), bad[n][:40]
            alone = await OwnerLookup(f"{base}/3/", "off", 2.0).lookup("198.18.2.2")
            assert alone.name is None and "names no holder" in alone.error
        resolver = Resolver("127.0.0.1", 1.0)  # the dns step's address owner reads the same answers
        try:
            for n in range(len(bad)):
                got = await address_owner(resolver, "198.18.2.2", f"{base}/{n}/", Https(None, 2.0))
                assert got.name == "unknown" or got.name.startswith("unknown ("), (bad[n][:40], got)
        finally:
            await resolver.close()
