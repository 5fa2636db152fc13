"""tests/kernel_path.py reads the kernel's trace of the probe's SYN, and nothing else.

The trace lines are docker_ufw_deny_published's recording (real `nft monitor trace`, with the
trace ids the recording strips put back); the stray packet is what conntrack does with a FIN of a
connection it no longer knows (after `conntrack -F`): INVALID, no nat, so INPUT, where ufw's
before-input chain drops it. Main's CI once read such a packet as the probe's path ('input').
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.kernel_path import base_chains, first_trace, summarize

CASE = Path(__file__).parents[1] / "data" / "firewall" / "docker_ufw_deny_published"
SYN_ID, STRAY_ID = "1c2d3e4f", "5a6b7c8d"
STRAY = [
    f"trace id {STRAY_ID} inet mclab_trace pre packet: iif \"eth0\" ip saddr 198.18.6.1 ip daddr 198.18.6.2 "
    "ip protocol tcp ip length 52 tcp dport 25 tcp flags == 0x11",
    f"trace id {STRAY_ID} inet mclab_trace pre policy accept",
    f"trace id {STRAY_ID} ip filter INPUT packet: iif \"eth0\" ip saddr 198.18.6.1 ip daddr 198.18.6.2 "
    "ip length 52 tcp dport 25 tcp flags == 0x11",
    f"trace id {STRAY_ID} ip filter INPUT rule counter jump ufw-before-input (verdict jump ufw-before-input)",
    f"trace id {STRAY_ID} ip filter ufw-before-input rule ct state invalid counter drop (verdict drop)",
]


def _recorded(port: int = 25) -> tuple[list[str], dict]:
    path = json.loads((CASE / "expected.json").read_text())["paths"][f"inbound/ipv4/{port}"]
    return [f"trace id {SYN_ID} {line}" for line in path["trace"]], path


def _chains() -> dict:
    return base_chains((CASE / "captured" / "nft_-j_list_ruleset.txt").read_text())


def test_the_syn_alone_is_read():
    syn, recorded = _recorded()
    got = summarize(first_trace(syn), _chains())
    assert got["hook"] == recorded["hook"] == "forward"
    assert got["translated"] == recorded["translated"]


def test_a_stray_packet_before_or_among_the_syns_lines_is_left_out():
    syn, recorded = _recorded()
    mixed = STRAY[:2] + syn[:5] + STRAY[2:] + syn[5:]
    lines = first_trace(mixed)
    assert lines == syn and not any(STRAY_ID in line for line in lines)
    got = summarize(lines, _chains())
    assert (got["hook"], got["translated"]) == ("forward", recorded["translated"])
    assert got["decided"].startswith("ip filter DOCKER rule") and "dport 25" in got["decided"]
    # what the stray packet alone says: INPUT, dropped by ufw (the CI failure's 'input')
    assert summarize(STRAY, _chains())["hook"] == "input"


def test_a_later_packet_with_the_syns_id_ends_the_trace():
    syn, _ = _recorded()
    ack = syn[0].replace("tcp flags == syn", "tcp flags == ack")
    assert first_trace(syn + [ack, syn[6]]) == syn


def test_no_syn_traced_is_no_trace():
    """The monitor subscribed after the SYN: nothing to read (trace_probe probes again)."""
    syn, _ = _recorded()
    late = [line.replace("tcp flags == syn", "tcp flags == ack") for line in syn]
    assert first_trace(STRAY + late) == []
