"""SPF: parsing, macros, and the evaluator's counting (RFC 7208 4.6.4) on a fake resolver."""

from __future__ import annotations

import pytest

from bot.dns.spf import check_spf, evaluate, static_lookups
from bot.dns.spf_parse import SpfSyntaxError, expand, parse, select, split_warnings
from tests.unit.dnsdata import StaticResolver

HOST = "198.51.100.25"


def txt(*strings: str) -> str:
    return " ".join('"' + s + '"' for s in strings)


@pytest.mark.parametrize("record,why", [
    ("v=spf1 foo:bar -all", "unknown"),
    ("v=spf1 ip4:300.1.1.1 -all", "bad address"),
    ("v=spf1 ip4:2001:db8::1 -all", "IPv6 address"),
    ("v=spf1 a/33 -all", "out of range"),
    ("v=spf1 redirect=a.test redirect=b.test", "twice"),
    ("v=spf1 include: -all", "needs a domain"),
    ("v=spf1 exists:%{z}.x.test -all", "starts no macro"),
    ("v=spf1 include:50% -all", "starts no macro"),
])
def test_syntax_errors(record, why):
    with pytest.raises(SpfSyntaxError, match=why):
        parse(record)


def test_parse_terms_and_cidrs():
    rec = parse("v=spf1 +a:mail.test/24//64 ~mx ip6:2001:db8::/32 ?ip4:192.0.2.0/24 exp=x.test -all")
    kinds = [(t.kind, t.qualifier) for t in rec.terms]
    assert kinds == [("a", "pass"), ("mx", "softfail"), ("ip6", "pass"), ("ip4", "neutral"),
                     ("exp", "pass"), ("all", "fail")]
    assert (rec.terms[0].cidr4, rec.terms[0].cidr6) == (24, 64)
    assert rec.terms[2].arg == "2001:db8::/32"


def test_select_and_bad_splits():
    sel = select([["v=spf1 include:a.test", "include:b.test -all"], ["google-site=x"]])
    assert sel.found == ["v=spf1 include:a.testinclude:b.test -all"]
    assert sel.warnings and "join with no space" in sel.warnings[0]
    assert sel.fixed == "v=spf1 include:a.test include:b.test -all"
    sel = select([["v=spf1 include:_sp", "f.google.com -all"]])  # split mid-word: fine
    assert (sel.found, sel.warnings, sel.fixed) == (["v=spf1 include:_spf.google.com -all"], [], None)
    assert split_warnings(["v=spf1 a ", "mx -all"]) == []
    assert select([["v=spf10 -all"], ["spf1 -all"]]).found == []
    # the split that loses the record altogether: "v=spf1" + "ip4:..." is "v=spf1ip4:..."
    sel = select([["v=spf1", "ip4:198.51.100.25 -all"]])
    assert sel.found == [] and "not an SPF record" in sel.warnings[0]
    assert sel.fixed == "v=spf1 ip4:198.51.100.25 -all"


def test_macro_expansion_rfc_examples():
    # RFC 7208 7.4, sender strong-bad@email.example.com, IP 192.0.2.3
    ctx = {"s": "strong-bad@email.example.com", "l": "strong-bad", "o": "email.example.com",
           "d": "email.example.com", "i": "192.0.2.3", "v": "in-addr", "h": "mx.example.org"}
    assert expand("%{s}", ctx) == "strong-bad@email.example.com"
    assert expand("%{d4}", ctx) == "email.example.com"
    assert expand("%{d2}", ctx) == "example.com"
    assert expand("%{d1}", ctx) == "com"
    assert expand("%{dr}", ctx) == "com.example.email"
    assert expand("%{d2r}", ctx) == "example.email"
    assert expand("%{l-}", ctx) == "strong.bad"
    assert expand("%{lr-}", ctx) == "bad.strong"
    assert expand("%{l1r-}", ctx) == "strong"
    assert expand("%{ir}.%{v}._spf.%{d2}", ctx) == "3.2.0.192.in-addr._spf.example.com"
    with pytest.raises(SpfSyntaxError):
        expand("%{c}", ctx)


def world(**extra) -> StaticResolver:
    base = {"example.test TXT": [txt("v=spf1 ip4:198.51.100.0/24 -all")]}
    base.update(extra)
    return StaticResolver(base)


async def test_pass_fail_and_what_decided():
    r = world()
    assert (await evaluate(r, "example.test", HOST)).result == "pass"
    v = await evaluate(r, "example.test", "203.0.113.9")
    assert (v.result, v.decided_by, v.lookups) == ("fail", "-all in example.test", 0)


def _chain(n: int) -> dict:
    """example.test includes i1, which includes i2 ... i<n>, which allows HOST."""
    recs = {"example.test TXT": [txt("v=spf1 include:i1.test -all")]}
    for i in range(1, n):
        recs[f"i{i}.test TXT"] = [txt(f"v=spf1 include:i{i + 1}.test -all")]
    recs[f"i{n}.test TXT"] = [txt(f"v=spf1 ip4:{HOST} -all")]
    return recs


async def test_ten_lookups_pass_eleven_permerror():
    assert (await evaluate(StaticResolver(_chain(10)), "example.test", HOST)).result == "pass"
    v = await evaluate(StaticResolver(_chain(11)), "example.test", HOST)
    assert v.result == "permerror" and "11th" in v.decided_by


async def test_terms_after_the_match_are_not_counted():
    # 12 lookup terms, but the host matches at the first: receivers pass it.
    terms = " ".join(f"a:h{i}.test" for i in range(12))
    r = StaticResolver({"example.test TXT": [txt(f"v=spf1 ip4:{HOST} {terms} -all")]})
    v = await evaluate(r, "example.test", HOST)
    assert (v.result, v.lookups) == ("pass", 0)
    assert await static_lookups(r, "example.test") == 12  # what a non-matching sender costs
    report = await check_spf(r, "example.test", [HOST])
    assert any("12 DNS lookups" in w for w in report.warnings)


async def test_mx_answer_is_not_ten_lookups_but_more_than_ten_names_is_permerror():
    names = [f"10 mx{i}.example.test." for i in range(10)]
    recs = {"example.test TXT": [txt("v=spf1 mx -all")], "example.test MX": names,
            **{f"mx{i}.example.test A": ["192.0.2.1"] for i in range(10)}}
    recs["mx9.example.test A"] = [HOST]
    v = await evaluate(StaticResolver(recs), "example.test", HOST)
    assert (v.result, v.lookups) == ("pass", 1)
    recs["example.test MX"] = names + ["10 mx10.example.test."]
    v = await evaluate(StaticResolver(recs), "example.test", HOST)
    assert v.result == "permerror" and "11 MX" in v.decided_by


async def test_void_lookups_two_allowed_third_permerror():
    rec = "v=spf1 a:v1.test a:v2.test {} ip4:" + HOST + " -all"
    v = await evaluate(StaticResolver({"example.test TXT": [txt(rec.format(""))]}), "example.test", HOST)
    assert (v.result, v.void_lookups) == ("pass", 2)
    v = await evaluate(StaticResolver({"example.test TXT": [txt(rec.format("exists:v3.test"))]}),
                       "example.test", HOST)
    assert v.result == "permerror" and "void" in v.decided_by


async def test_include_without_record_is_permerror_redirect_follows():
    v = await evaluate(world(**{"example.test TXT": [txt("v=spf1 include:none.test -all")]}),
                       "example.test", HOST)
    assert v.result == "permerror"
    r = world(**{"example.test TXT": [txt("v=spf1 redirect=_spf.example.test")],
                 "_spf.example.test TXT": [txt(f"v=spf1 ip4:{HOST} ~all")]})
    v = await evaluate(r, "example.test", "203.0.113.9")
    assert (v.result, v.decided_by, v.lookups) == ("softfail", "~all in _spf.example.test", 1)


async def test_dns_failure_is_temperror_never_a_verdict():
    r = world(**{"example.test TXT": [txt("v=spf1 include:slow.test -all")], "slow.test TXT": "timeout"})
    assert (await evaluate(r, "example.test", HOST)).result == "temperror"


async def test_exists_with_macros_and_ipv6_nibbles():
    v6 = "2001:db8::25"
    nib = ".".join("20010db8000000000000000000000025")
    r = world(**{"example.test TXT": [txt("v=spf1 exists:%{i}._ip.%{d} -all")],
                 f"{nib}._ip.example.test A": ["127.0.0.2"]})
    assert (await evaluate(r, "example.test", v6)).result == "pass"
    assert (await evaluate(r, "example.test", "2001:db8::26")).result == "fail"


async def test_ptr_mechanism_validates_names():
    rev = "25.100.51.198.in-addr.arpa"
    r = world(**{"example.test TXT": [txt("v=spf1 ptr -all")], f"{rev} PTR": ["mail.example.test."],
                 "mail.example.test A": [HOST]})
    assert (await evaluate(r, "example.test", HOST)).result == "pass"
    r.records["mail.example.test a"] = ["192.0.2.1"]  # the PTR name does not point back
    assert (await evaluate(r, "example.test", HOST)).result == "fail"


async def test_check_spf_flags_plus_all_and_two_records():
    r = world(**{"example.test TXT": [txt("v=spf1 +all")]})
    report = await check_spf(r, "example.test", [HOST])
    assert any("every host" in w for w in report.warnings)
    r = world(**{"example.test TXT": [txt("v=spf1 -all"), txt("v=spf1 a -all")]})
    report = await check_spf(r, "example.test", [HOST])
    assert "2 SPF records" in report.error and report.verdicts[HOST].result == "permerror"


async def test_a_self_including_record_cannot_stall_the_worst_case_count():
    """A hostile (or broken) domain includes itself several times: the static count walked
    every path of the tree (5 ** 13 of them), and the check, with the event loop, never ended."""
    loop = " ".join(["include:example.test"] * 5)
    r = world(**{"example.test TXT": [txt(f"v=spf1 {loop} -all")]})
    import asyncio
    async with asyncio.timeout(10):
        report = await check_spf(r, "example.test", [HOST])
    assert report.worst_case_lookups is None  # cannot count a loop: unknown, not a number
    assert report.verdicts[HOST].result == "permerror"  # what a receiver concludes
