"""What exact peer addresses cost the firewall analysis (issue 15 item 4).

Every mail port (5 inbound, 3 outbound, IPv4) is analysed with port_verdicts as the firewall step
does (the regions cut once per family), for rulesets that differ only in their address matches, and each is compared with the
same ruleset without them (a plain INPUT accept of the mail ports), in the same run, as a ratio:

- deny10: a CSF-style deny list of 10 networks (DENYIN -s / DENYOUT -d);
- f2b50 / f2b1000: fail2ban's iptables-multiport chain with 50 / 1,000 per-address REJECTs
  on 25, 465, 587 (each ban decides its own address: one walk each, at most MAX_REGIONS);
- set10k: one `ip saddr @blocklist drop` with 10,000 addresses in the set (two regions).

    python3 bench/firewall_peers.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.firewall.analysis import AnalysisContext, port_verdicts  # noqa: E402
from bot.firewall.parse.iptables import parse_save  # noqa: E402
from bot.firewall.parse.nft import parse_nft_json  # noqa: E402

CONTEXT = AnalysisContext((25, 465, 587, 143, 993), (25, 465, 587), "198.18.9.1", None, "198.18.9.2", None, "eth0")
HEAD = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"]
PLAIN = [*HEAD, "-A INPUT -p tcp -m multiport --dports 25,465,587,143,993 -j ACCEPT", "COMMIT", ""]


def iptables_case(name: str):
    if name == "plain":
        return parse_save("\n".join(PLAIN))
    if name == "deny10":
        nets = [f"203.0.{i}.0/24" for i in range(10)]
        lines = [*HEAD, ":DENYIN - [0:0]", ":DENYOUT - [0:0]", "-A INPUT -j DENYIN", "-A OUTPUT -j DENYOUT"]
        lines += [f"-A DENYIN -s {n} -j DROP" for n in nets] + [f"-A DENYOUT -d {n} -j DROP" for n in nets]
    else:
        n = int(name[3:])
        lines = [*HEAD, ":f2b-exim - [0:0]", "-A INPUT -p tcp -m multiport --dports 25,465,587 -j f2b-exim"]
        lines += [f"-A f2b-exim -s 203.0.{i // 256}.{i % 256}/32 -j REJECT" for i in range(n)]
        lines.append("-A f2b-exim -j RETURN")
    return parse_save("\n".join([*lines, PLAIN[-3], "COMMIT", ""]))


def nft_case():
    elems = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10000)]
    doc = {"nftables": [
        {"table": {"family": "inet", "name": "f", "handle": 1}},
        {"set": {"family": "inet", "table": "f", "name": "blocklist", "type": "ipv4_addr", "handle": 2,
                 "elem": elems}},
        {"chain": {"family": "inet", "table": "f", "name": "input", "handle": 3, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 4, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@blocklist"}},
            {"drop": None}]}}]}
    return parse_nft_json(json.dumps(doc))


def analyse(ruleset) -> tuple[float, list]:
    t = time.perf_counter()
    out = port_verdicts(ruleset, CONTEXT)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    runs = ap.parse_args().runs
    cases = {name: iptables_case(name) for name in ("plain", "deny10", "f2b50", "f2b1000")}
    cases["set10k"] = nft_case()
    times: dict[str, list[float]] = {n: [] for n in cases}
    listed = {}
    for _ in range(runs):
        for name, rs in cases.items():
            took, verdicts = analyse(rs)
            times[name].append(took)
            listed[name] = [None if v.peers.exceptions is None else len(v.peers.exceptions) for v in verdicts]
            assert all(v.verdict == "allow" for v in verdicts), name  # no address blocks the prober
    base = statistics.median(times["plain"])
    print(f"{'case':8} {'median s':>9} {'x plain':>8}  exceptions listed per port (None: not listed)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:8} {med:9.3f} {med / base:8.1f}  {listed[name]}")


if __name__ == "__main__":
    main()
