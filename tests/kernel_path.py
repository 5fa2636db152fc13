"""Which way did the kernel send a probe? nft trace, conntrack and rule counters, recorded.

The corpus records the kernel's verdict per port (open/refused/filtered). For a
published container port the verdict alone does not say *why*: the packet is
DNATed in nat PREROUTING and then crosses FORWARD, not INPUT. trace_probe()
sends one probe from outside and asks the kernel itself:

- `nft monitor trace` (a trace table of ours marks the probe's packets with
  nftrace at prerouting priority -350): every nf_tables chain and rule the SYN
  met, with the packet as each base chain saw it (so the translated destination
  as FORWARD sees it). iptables-nft rules are nf_tables rules and show here;
  iptables-legacy rules do not (their counters do);
- conntrack's entry for the connection (original and reply tuples: the reply
  source is the translated destination);
- the rules whose packet counters grew (`iptables-save -c`, nft and legacy).

From these: translated ("198.19.N.2:25"), hook ("forward" or "input") and
decided (the rule or policy line that gave the final filter verdict).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

TRACE_TABLE = "mclab_trace"
_TRACE = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) (packet|rule|policy|verdict)\b ?(.*)$")


def base_chains(nft_json: str) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(family, table, chain) -> (type, hook) for every base chain of `nft -j list ruleset`."""
    out = {}
    for item in json.loads(nft_json or '{"nftables": []}').get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook"):
            out[(chain["family"], chain["table"], chain["name"])] = (chain.get("type", ""), chain["hook"])
    return out


def first_trace(lines: list[str]) -> list[str]:
    """The lines of the probe's SYN: from our own trace table's line for a packet with the SYN
    flag, the lines with its trace id, up to the next packet of ours with that id (later packets
    of the connection may carry the same id). Lines of other packets are left out: a stray
    packet of an earlier connection (a FIN or RST that conntrack no longer knows skips nat and
    goes to INPUT) may be traced before the SYN or between its lines."""
    out: list[str] = []
    syn_id = None
    for line in lines:
        m = _TRACE.match(line)
        if not m:
            continue
        ours_packet = m.group(2, 3, 5) == ("inet", TRACE_TABLE, "packet")
        if syn_id is None:
            if ours_packet and re.search(r"tcp flags == syn\b", m.group(6)):
                syn_id = m.group(1)
                out.append(line)
            continue
        if m.group(1) != syn_id:
            continue
        if ours_packet:
            break
        out.append(line)
    return out


def summarize(lines: list[str], chains: dict) -> dict:
    """hook, translated destination and deciding line of one traced packet."""
    hook = kind = current = None
    translated = None
    verdicts: list[tuple[str, str]] = []  # (verdict, line) in filter chains on input/forward
    for line in lines:
        m = _TRACE.match(line)
        if not m:
            continue
        _, family, table, chain, what, rest = m.groups()
        if (family, table) == ("inet", TRACE_TABLE):
            continue
        if what == "packet":
            kind, hook_now = chains.get((family, table, chain), ("", ""))
            hook = hook_now if hook_now in ("input", "forward") and kind == "filter" else hook
            current = hook_now
            if hook_now == "forward" and translated is None:
                daddr = re.search(r"ip6? daddr (\S+)", rest)
                dport = re.search(r"(?:tcp|th) dport (\d+)", rest)
                translated = f"{daddr.group(1)}:{dport.group(1)}" if daddr and dport else None
            continue
        if kind != "filter" or current not in ("input", "forward"):
            continue
        verdict = re.search(r"\(verdict (\w+)", rest) if what == "rule" else re.match(r"(\w+)", rest)
        if verdict and verdict.group(1) in ("accept", "drop"):
            verdicts.append((verdict.group(1), f"{family} {table} {chain} {what} {rest}".strip()))
    drops = [line for v, line in verdicts if v == "drop"]
    decided = drops[0] if drops else (verdicts[-1][1] if verdicts else None)
    return {"hook": hook, "translated": translated, "decided": decided}


def counters(host) -> dict[str, int]:
    """'table|rule' -> packets, for iptables-nft and legacy (IPv4) rules and chain policies."""
    out: dict[str, int] = {}
    for save in ("iptables-save", "iptables-legacy-save"):
        table = ""
        for line in host.sh(save, "-c", check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            m = re.match(r"^\[(\d+):\d+\] (-A .*)$", line) or re.match(r"^(:\S+ \S+) \[(\d+):\d+\]$", line)
            if m and line.startswith("["):
                out[f"{save} {table} {m.group(2)}"] = int(m.group(1))
            elif m:
                out[f"{save} {table} {m.group(1)} policy"] = int(m.group(2))
    return out


def trace_probe(host, port: int, probe_fn, timeout: float = 1.5, attempts: int = 3) -> dict:
    """Probe host.ip:port from outside, with the kernel's own account of the path. `nft monitor
    trace` gives no sign that it has subscribed: a probe whose SYN it missed (a loaded machine)
    is sent again, waiting longer, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        result = _trace_once(host, port, probe_fn, timeout, settle=0.4 * attempt)
        if result["trace"] or attempt == attempts:
            return result
    raise AssertionError("unreachable")


def _trace_once(host, port: int, probe_fn, timeout: float, settle: float) -> dict:
    host.sh("conntrack", "-F", check=False)
    host.sh("nft", f"add table inet {TRACE_TABLE}; add chain inet {TRACE_TABLE} pre "
                   "{ type filter hook prerouting priority -350; }; "
                   f"add rule inet {TRACE_TABLE} pre ip saddr {host.outside_ip} tcp dport {port} meta nftrace set 1")
    before = counters(host)
    mon = subprocess.Popen(["ip", "netns", "exec", host.ns, "nft", "monitor", "trace"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(settle)  # the monitor must be subscribed before the SYN
        outcome = probe_fn(port, timeout=timeout)
        time.sleep(0.3)
    finally:
        mon.terminate()
        trace_out = mon.communicate(timeout=10)[0]
        host.sh("nft", f"delete table inet {TRACE_TABLE}", check=False)
    after = counters(host)
    ct = host.sh("conntrack", "-L", "-p", "tcp", "--orig-port-dst", str(port), check=False).stdout
    chains = base_chains(host.sh("nft", "-j", "list", "ruleset", check=False).stdout)
    raw = first_trace(trace_out.splitlines())
    summary = summarize(raw, chains)
    summary["decided"] = summary["decided"] and _strip_ether(summary["decided"])
    lines = [_strip_ether(line) for line in raw]
    conntrack = [_normalize_conntrack(line, port) for line in ct.splitlines() if line.strip()]
    hit = sorted(k for k, v in after.items() if v > before.get(k, 0))
    if summary["translated"] is None:
        summary["translated"] = _conntrack_translated(conntrack, host.ip)
    for k, v in from_counters(hit, port).items():  # iptables-legacy: no trace, counters only
        summary[k] = summary[k] or v
    return {"outcome": outcome, **summary, "trace": lines, "conntrack": conntrack, "rules_hit": hit}


def from_counters(hit: list[str], port: int) -> dict:
    """hook, translated and deciding rule from the rules whose counters grew. The probe's
    whole connection counts, so an ACCEPT is taken only from a rule naming the port."""
    filt = [h for h in hit if " filter " in h]

    def in_chain(chain: str) -> bool:
        return any(re.match(rf"(-A |:){chain}\b", h.split(" filter ", 1)[1]) for h in filt)

    hook = "forward" if in_chain("FORWARD") else "input" if in_chain("INPUT") else None
    dnat = next((re.search(r"--to-destination (\S+)", h) for h in hit if "-j DNAT" in h), None)
    drops = [h for h in filt if re.search(r"-j (DROP|REJECT)\b|:\S+ DROP policy", h)]
    accepts = [h for h in filt if h.endswith("-j ACCEPT") and f"--dport {port} " in h]
    decided = drops[0] if drops else accepts[0] if accepts else None
    return {"hook": hook, "translated": dnat.group(1) if dnat else None,
            "decided": decided and f"(counters) {decided}"}


def _strip_ether(line: str) -> str:
    """MAC addresses and IP ids change per run: drop them so recordings are comparable."""
    line = re.sub(r" ether (s|d)addr \S+", "", line)
    line = re.sub(r" ip id \d+| tcp sport \d+| tcp window \d+| ip ttl \d+|^trace id \w+ ", " ", line)
    line = re.sub(r"counter packets \d+ bytes \d+", "counter", line)
    return " ".join(line.split())


def _normalize_conntrack(line: str, port: int) -> str:
    """Without the timeout and the client's ephemeral port (they change per run)."""
    line = re.sub(r"^(\w+)\s+\d+\s+\d+\s+", r"\1 ", line.strip())
    return re.sub(r"\b(sport|dport)=(\d+)", lambda m: m.group(0) if m.group(2) == str(port) else f"{m.group(1)}=*", line)


def _conntrack_translated(entries: list[str], host_ip: str) -> str | None:
    """The reply tuple's source when it differs from the address the probe was sent to."""
    for entry in entries:
        srcs = re.findall(r"src=(\S+)", entry)
        sports = re.findall(r"sport=(\S+)", entry)
        if len(srcs) >= 2 and len(sports) >= 2 and srcs[1] != host_ip:
            return f"{srcs[1]}:{sports[1]}"
    return None
