"""Property tests: random and malformed `nft -j list ruleset` JSON and firewall-cmd text never crash
the parsers; an expression they cannot understand makes the verdict unknown, never a guess."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.firewall.evaluate import evaluate
from bot.firewall.model import Packet
from bot.firewall.parse.firewalld import parse_active_zones, parse_firewalld, parse_list_all
from bot.firewall.parse.nft import normalize_nft, parse_nft, parse_nft_json
from bot.firewall.parse.nft_text import render_rule, rule_lines

DATA = Path(__file__).parents[1] / "data"
SAMPLES = sorted(p.read_text() for p in (DATA / "nft").glob("*.json")) + sorted(
    p.read_text() for p in (DATA / "firewall").glob("nft-*/captured/nft_-j_list_ruleset.txt"))
LISTINGS = sorted(p.read_text() for p in (DATA / "nft").rglob("*.txt"))
FWD_TEXT = sorted(p.read_text() for p in (DATA / "firewalld").glob("*.txt"))
PACKETS = [Packet("inbound", "ipv4", 25, "198.18.1.1", "198.18.1.2", iif="eth0"),
           Packet("outbound", "ipv4", 587, "198.18.1.2", "198.18.1.1", oif="eth0"),
           Packet("inbound", "ipv6", 993, "2001:2::1", "2001:2::2", iif="eth0"),
           Packet("inbound", "ipv4", 25, "198.18.1.1", "198.18.1.2", iif="eth0", ctstate="established")]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.sampled_from([
    "tcp", "udp", "ip", "ip6", "inet", "input", "output", "filter", "drop", "accept", "eth*", "lo", "@blocked",
    "@missing", "10.0.0.0/8", "::1", "300.1.1.1", "new", "established", "bogus", "dport", "saddr", "",
    "filter - 10", "raw", "ipv4", "ipv6", "local", "syn", "smtp"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.sampled_from([
                                                         "match", "op", "left", "right", "payload", "protocol",
                                                         "field", "meta", "key", "ct", "set", "range", "prefix",
                                                         "addr", "len", "vmap", "data", "jump", "goto", "target",
                                                         "accept", "drop", "counter", "limit", "xt", "elem", "val",
                                                         "fib", "flags", "result", "&", "concat", "notrack",
                                                         "reject", "return"]), inner, max_size=3)), max_leaves=12)


def verdicts(ruleset) -> list[str]:
    return [evaluate(ruleset, p).verdict for p in PACKETS]


@FUZZ
@given(st.text(max_size=400))
def test_any_text_never_crashes(text):
    rs = parse_nft_json(text)
    assert all(v in ("allow", "block", "unknown") for v in verdicts(rs))
    rule_lines(text)
    normalize_nft(text)


@FUZZ
@given(st.sampled_from(SAMPLES), st.integers(0, 100000), st.integers(1, 200))
def test_truncated_json_is_a_problem(text, start, length):
    cut = text[: start % max(len(text), 1)]
    rs = parse_nft_json(cut)
    if cut.strip() != text.strip():
        assert rs.problems
        assert set(verdicts(rs)) == {"unknown"}


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_random_expression_never_crashes(text, data):
    """Replace one expression of one rule by random JSON: never a crash, verdicts stay well-formed."""
    doc = json.loads(text)
    rules = [i for i, item in enumerate(doc["nftables"]) if "rule" in item and item["rule"].get("expr")]
    if not rules:
        return
    i = data.draw(st.sampled_from(rules))
    mutated = copy.deepcopy(doc)
    exprs = mutated["nftables"][i]["rule"]["expr"]
    j = data.draw(st.integers(0, len(exprs) - 1))
    exprs[j] = data.draw(JSON)
    rs = parse_nft_json(json.dumps(mutated))
    assert all(v in ("allow", "block", "unknown") for v in verdicts(rs))
    render_rule(exprs)


SKUID = {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_a_match_not_understood_never_turns_a_verdict_into_another(text, data):
    """An Unknown match added to any rule: each verdict stays what it was, or becomes unknown."""
    doc = json.loads(text)
    rules = [i for i, item in enumerate(doc["nftables"]) if "rule" in item and item["rule"].get("expr")]
    if not rules:
        return
    i = data.draw(st.sampled_from(rules))
    mutated = copy.deepcopy(doc)
    mutated["nftables"][i]["rule"]["expr"].insert(0, SKUID)
    was, now = verdicts(parse_nft_json(text)), verdicts(parse_nft_json(json.dumps(mutated)))
    assert all(n in (w, "unknown") for w, n in zip(was, now, strict=True)), (was, now)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_random_item_fields_never_crash(text, data):
    doc = json.loads(text)
    items = doc["nftables"]
    i = data.draw(st.integers(0, len(items) - 1))
    kind = next(iter(items[i]))
    if isinstance(items[i][kind], dict) and items[i][kind]:
        field = data.draw(st.sampled_from(sorted(items[i][kind])))
        items[i][kind][field] = data.draw(JSON)
    parsed = parse_nft(json.dumps(doc), skip_tables=frozenset({("ip", "filter")}))
    assert all(v in ("allow", "block", "unknown") for v in verdicts(parsed.ruleset))


def test_unknown_match_in_the_deciding_path_gives_unknown():
    doc = {"nftables": [
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input",
                   "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2,
                  "expr": [{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, {"drop": None}]}},
    ]}
    assert evaluate(parse_nft_json(json.dumps(doc)), PACKETS[0]).verdict == "unknown"


@FUZZ
@given(st.text(max_size=300), st.sampled_from(FWD_TEXT))
def test_firewalld_text_never_crashes(noise, real):
    for text in (noise, real + noise, real[: len(noise)]):
        parse_list_all(text, [])
        parse_active_zones(text)
        status = parse_firewalld(("running\n", 0), text[:40], text, text)
        for zone in status.zones.values():
            zone.allows_port(25)
        status.zone_for("eth0", "198.18.0.1")
        status.zone_for("eth0", "not an address")
