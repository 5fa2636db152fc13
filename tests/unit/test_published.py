"""Which nat rule publishes a port (bot/firewall/published.py), judged by the kernel.

The corpus' container cases recorded the kernel's own account of each probe of a
published port (tests/kernel_path.py): the translated destination (from the conntrack entry
or the nft trace), the address and port the DNAT sent the connection to. `published` must name that same
destination, and the rule, for every case the lab recorded; where no nat rule touches a
port (every other case), it must say so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.firewall import parse_all
from bot.firewall.model import Chain, Packet, Rule, Ruleset, Table, Unknown, Verdict
from bot.firewall.published import Published, nat_target, published
from tests.firewall_corpus import load_captured

CORPUS = Path(__file__).parents[1] / "data" / "firewall"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "expected.json").exists() and (p / "captured").exists())


def _packet(addresses: dict, family: str, port: int) -> Packet:
    host, prober = (addresses["host6"], addresses["prober6"]) if family == "ipv6" else \
        (addresses["host"], addresses["prober"])
    return Packet("inbound", family, port, prober, host, iif=addresses.get("iface", "eth0"),
                  local_addrs=frozenset({addresses["host"], addresses["host6"]}))


def _reply_source(conntrack: list[str]) -> str | None:
    """'tcp ... src=P dst=H sport=* dport=25 src=C dst=P sport=25 ...' -> 'C:25'."""
    for line in conntrack:
        m = re.search(r"src=\S+ dst=\S+ sport=\S+ dport=\S+ src=(\S+) dst=\S+ sport=(\d+)", line)
        if m:
            return f"{m[1]}:{m[2]}"
    return None


DNAT_CASES = [c for c in CASES if json.loads((c / "expected.json").read_text()).get("paths")]


@pytest.mark.parametrize("case", DNAT_CASES, ids=[c.name for c in DNAT_CASES])
def test_the_dnat_named_is_where_the_kernel_sent_the_probe(case):
    expected = json.loads((case / "expected.json").read_text())
    ruleset = parse_all(load_captured(case / "captured"))
    checked = 0
    for key, path in expected["paths"].items():
        _, family, port = key.split("/")
        found = published(ruleset, _packet(expected["addresses"], family, int(port)))
        if path.get("hook") != "forward":
            continue  # answered on the host itself (docker-proxy on IPv6): no DNAT for it
        target = path.get("translated") or _reply_source(path.get("conntrack") or [])
        assert found is not None and target is not None, (key, found, path.get("conntrack"))
        assert found.destination == target and not found.redirect
        assert f"--dport {port} " in found.rule or f"dport {port} " in found.rule
        checked += 1
    assert checked >= 1


NO_NAT = [c for c in CASES if c not in DNAT_CASES and c.name != "nat_redirect_25"]


@pytest.mark.parametrize("case", NO_NAT, ids=[c.name for c in NO_NAT])
def test_no_nat_rule_no_claim(case):
    expected = json.loads((case / "expected.json").read_text())
    ruleset = parse_all(load_captured(case / "captured"))
    for port in (25, 465, 587, 143, 993):
        assert published(ruleset, _packet(expected["addresses"], "ipv4", port)) is None


def test_redirect_to_a_local_port_and_a_dnat_elsewhere():
    case = CORPUS / "nat_redirect_25"
    expected = json.loads((case / "expected.json").read_text())
    ruleset = parse_all(load_captured(case / "captured"))
    r25 = published(ruleset, _packet(expected["addresses"], "ipv4", 25))
    assert r25 == Published(":2525", True, r25.rule) and r25.address is None
    assert "REDIRECT --to-ports 2525" in r25.rule
    r8080 = published(ruleset, _packet(expected["addresses"], "ipv4", 8080))
    assert r8080.destination == "192.0.2.80:80" and r8080.address == "192.0.2.80"


def test_a_match_not_understood_before_the_dnat_is_no_answer():
    nat = Table("ip", "nat", "iptables-nft", {"PREROUTING": Chain("PREROUTING", [
        Rule((Unknown(text="-m weird"),), Verdict("unknown"), "-A PREROUTING -m weird -j MARK"),
        Rule((), Verdict("unknown"), "-A PREROUTING -p tcp --dport 25 -j DNAT --to-destination 10.0.0.2:25"),
    ], hook="prerouting", priority=-100, policy="accept", type="nat")})
    p = Packet("inbound", "ipv4", 25, "198.18.1.1", "198.18.1.2", iif="eth0")
    assert published(Ruleset([nat]), p) is None
    nat.chains["PREROUTING"].rules.pop(0)
    assert published(Ruleset([nat]), p).destination == "10.0.0.2:25"


def test_targets_as_each_firewall_prints_them():
    assert nat_target("-A DOCKER ! -i docker0 -p tcp -m tcp --dport 25 -j DNAT --to-destination "
                      "172.17.0.2:25") == ("172.17.0.2:25", False)
    assert nat_target('iifname != "docker0" tcp dport 25 dnat to 198.19.5.2:25 comment "DNAT"') == \
        ("198.19.5.2:25", False)
    assert nat_target("tcp dport 25 dnat ip to 198.19.7.2:25") == ("198.19.7.2:25", False)
    assert nat_target("tcp dport 25 redirect to :2525") == (":2525", True)
    assert nat_target("-A INPUT -p tcp --dport 25 -j ACCEPT") is None
    assert Published("[2001:db8::2]:25", False, "r").address == "2001:db8::2"
