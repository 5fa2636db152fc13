"""Property tests: random and malformed iptables-save / ufw status text never crash the parsers,
and what they cannot understand makes the verdict unknown, never a guess."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.firewall.evaluate import evaluate
from bot.firewall.model import Packet
from bot.firewall.parse.iptables import MODULES, normalize_iptables_save, parse_save
from bot.firewall.parse.ufw import parse_ufw_status

CORPUS = Path(__file__).parents[1] / "data" / "firewall"
SAVES = sorted(p.read_text() for p in CORPUS.glob("*/captured/*tables-save_-c.txt") if p.read_text().strip())
UFW = sorted(p.read_text() for p in CORPUS.glob("*/captured/ufw_status_verbose.txt"))
PACKETS = [Packet("inbound", "ipv4", 25, "198.18.1.1", "198.18.1.2", iif="eth0"),
           Packet("outbound", "ipv4", 587, "198.18.1.2", "198.18.1.1", oif="eth0"),
           Packet("inbound", "ipv6", 993, "2001:2::1", "2001:2::2", iif="eth0")]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = st.sampled_from([
    "-p", "tcp", "udp", "6", "!", "-s", "-d", "10.0.0.0/8", "::/0", "300.1.1.1/99", "-i", "-o", "eth0", "eth+", "lo",
    "-m", "tcp", "multiport", "state", "conntrack", "comment", "set", "recent", "limit", "owner", "mark", "frob",
    "--dport", "--sport", "--dports", "25", "1:2", "65536", "22,25,587", "a:b", ":", ",", "--state", "NEW",
    "ESTABLISHED,RELATED", "BOGUS", "--ctstate", "--ctstatus", "--comment", '"x y"', '"', "--syn", "--tcp-flags",
    "ALL", "NONE", "SYN,ACK", "--match-set", "src", "-j", "-g", "ACCEPT", "DROP", "REJECT", "RETURN", "LOG",
    "CT", "--notrack", "NOTRACK", "MASQUERADE", "user", "-f", "--reject-with", "tcp-reset", "", "[1:2]",
])


def _verdicts(text: str) -> list[str]:
    rs = parse_save(text)
    return [evaluate(rs, p).verdict for p in PACKETS]


@FUZZ
@given(st.text(max_size=400))
def test_random_text_never_crashes(text):
    assert set(_verdicts(text)) <= {"allow", "block", "unknown"}
    parse_ufw_status(text)


@FUZZ
@given(st.lists(st.lists(WORDS, max_size=14), max_size=6), st.sampled_from(["ACCEPT", "DROP", "-"]))
def test_random_rules_in_a_valid_table(rules, policy):
    lines = ["*filter", f":INPUT {policy} [0:0]", ":OUTPUT ACCEPT [0:0]", ":user - [0:0]"]
    lines += [" ".join(["-A", "INPUT", *words]) for words in rules] + ["COMMIT"]
    rs = parse_save("\n".join(lines))
    for p in PACKETS:
        assert evaluate(rs, p).verdict in ("allow", "block", "unknown")
    for rule in rs.tables[0].chains["INPUT"].rules if rs.tables else []:
        assert rule.text.startswith("-A INPUT")


@FUZZ
@given(st.sampled_from(sorted({"set", "recent", "limit", "hashlimit", "owner", "mark", "connlimit", "frob",
                               "string", "geoip", "time", "u32", "bpf", "cgroup"} - set(MODULES))),
       st.sampled_from(["DROP", "ACCEPT", "REJECT"]), st.sampled_from(["ACCEPT", "DROP"]))
def test_a_match_not_understood_is_unknown_when_it_decides(module, target, policy):
    opposite = "ACCEPT" if target != "ACCEPT" else "DROP"
    policy = opposite if policy == target or (target == "REJECT" and policy == "DROP") else policy
    text = f"*filter\n:INPUT {policy} [0:0]\n-A INPUT -p tcp -m {module} --whatever 1 -j {target}\nCOMMIT\n"
    assert evaluate(parse_save(text), PACKETS[0]).verdict == "unknown"


@FUZZ
@given(st.sampled_from(SAVES), st.integers(0, 10_000), st.integers(1, 40))
def test_truncated_or_damaged_real_output(text, cut, span):
    cut %= max(len(text), 1)
    truncated = text[:cut]
    rs = parse_save(truncated)
    if "*" in truncated and "COMMIT" not in truncated.rsplit("*", 1)[-1]:
        assert rs.problems and all(evaluate(rs, p).verdict == "unknown" for p in PACKETS)
    damaged = text[:cut] + text[cut + span:]
    assert set(_verdicts(damaged)) <= {"allow", "block", "unknown"}


@FUZZ
@given(st.sampled_from(SAVES + ["", "#\n", "[1:2] -A X\n"]))
def test_normalize_is_idempotent_and_has_no_counters(text):
    once = normalize_iptables_save(text)
    assert normalize_iptables_save(once) == once
    assert "# Generated" not in once and "# Completed" not in once


@FUZZ
@given(st.sampled_from(UFW), st.integers(0, 5000), st.text(max_size=30))
def test_ufw_status_damaged(text, cut, junk):
    cut %= max(len(text), 1)
    s = parse_ufw_status(text[:cut] + junk + text[cut:])
    assert s.active in (True, False, None)
    for r in s.rules:
        assert r.action in ("allow", "deny", "reject", "limit") and r.direction in ("in", "out", "fwd")
        r.covers(25)
