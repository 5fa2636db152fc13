"""Per-port verdicts for a mail host, from one Ruleset.

A connection works only when its first packet (NEW) passes and the replies
(ESTABLISHED) pass too: both are evaluated. Inbound packets come from the
address the outside probe used, so the verdict speaks of the same packet as
the probe; a generic internet source is evaluated too, and any difference
(a fail2ban ban on the prober, an accept limited to some networks) becomes a
finding of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot.firewall.evaluate import Outcome, PacketVerdict, evaluate
from bot.firewall.model import Packet, Routes, Ruleset
from bot.models import Direction, Family, Finding, FirewallVerdict, PortKey

# Stand-ins for "somewhere on the internet" (documentation ranges): only ever
# evaluated against the model, never sent a packet.
GENERIC_PEER = {"ipv4": "192.0.2.10", "ipv6": "2001:db8::10"}
EPHEMERAL = 40000


@dataclass(frozen=True)
class Endpoints:
    host: str  # the host's address in this family
    peer: str  # the prober (inbound) or a remote mail server (outbound)
    iface: str | None
    local_addrs: frozenset[str]
    routes: Routes | None = None  # where a translated packet goes (None: not known)


@dataclass(frozen=True)
class AnalysisContext:
    """What the analysis needs to know about the host and the probe, besides the firewall's output."""

    inbound_ports: tuple[int, ...]
    outbound_ports: tuple[int, ...]
    prober_v4: str | None  # source address the outside probe used (IPv4), if probed
    prober_v6: str | None
    host_v4: str | None  # the host address that was probed
    host_v6: str | None
    inbound_iface: str | None = None  # interface holding host_v4 (e.g. eth0)
    families: tuple[Family, ...] = ("ipv4",)
    distro_family: str = "debian"  # debian | rhel | unknown (where rules persist)
    host_addrs: tuple[str, ...] = ()  # every address of the host (addrtype LOCAL)
    routes_v4: Routes | None = None  # the host's routes and forwarding (analyze() reads them)
    routes_v6: Routes | None = None

    def endpoints(self, family: Family) -> Endpoints | None:
        """The host and the prober in this family (a generic internet peer when not probed)."""
        host = self.host_v4 if family == "ipv4" else self.host_v6
        if host is None:
            return None
        prober = self.prober_v4 if family == "ipv4" else self.prober_v6
        local = frozenset({host, *self.host_addrs, "127.0.0.1", "::1"})
        routes = self.routes_v4 if family == "ipv4" else self.routes_v6
        return Endpoints(host, prober or GENERIC_PEER[family], self.inbound_iface, local, routes)

    def all_endpoints(self) -> dict[str, Endpoints]:
        return {f: e for f in self.families if (e := self.endpoints(f)) is not None}


@dataclass(frozen=True)
class PortVerdict:
    """One mail port's verdict, from the evaluator to the report: a connection's first packet, then its replies.

    The report's `firewall` and `blocked_by` come from here; planners group ports by `point`.
    """

    key: PortKey
    verdict: FirewallVerdict
    blocked_by: str | None = None  # the deciding rule or policy as the firewall shows it
    deciding: Outcome | None = None  # where it was decided: table, chain, rule (None: policy)
    path: tuple[str, ...] = ()  # chains/rules walked, for the evidence
    reasons: tuple[str, ...] = ()  # why the verdict is unknown
    reply_blocked: bool = False  # the first packet passes, the replies do not
    generic: PacketVerdict | None = None  # a generic internet source's verdict (inbound, peer = prober)
    delivered: Packet | None = None  # the first packet where it was decided (translated? forwarded?)

    @property
    def dnat_to(self) -> str | None:
        """'198.19.8.2:25' when nat PREROUTING translated the connection (a published port)."""
        p = self.delivered
        if p is None or not p.dnat:
            return None
        return f"[{p.daddr}]:{p.dport}" if ":" in p.daddr else f"{p.daddr}:{p.dport}"

    @property
    def forwarded(self) -> bool:
        """The connection goes through this host to another (FORWARD decides, not INPUT)."""
        return bool(self.delivered and self.delivered.forwarded)

    @property
    def reject(self) -> bool:
        return bool(self.deciding and self.deciding.reject)

    @property
    def point(self) -> tuple:
        """Where the verdict is decided: table, chain, rule (handle for nft, else position), reply?

        Ports with the same point are opened by one edit there (the planners group by it).
        """
        d = self.deciding
        if d is None or d.table is None or d.chain is None:
            return ("?",)
        rule = None if d.rule is None else d.rule.handle if d.table.source == "nft" else d.rule.position
        return (d.table.label, d.chain.name, rule, self.reply_blocked)


def packets(direction: Direction, family: Family, port: int, ends: Endpoints) -> tuple[Packet, Packet]:
    """The first packet of the connection and the first reply (as if nothing translated it)."""
    common = {"local_addrs": ends.local_addrs, "routes": ends.routes}
    if direction == "inbound":
        first = Packet("inbound", family, port, ends.peer, ends.host, sport=EPHEMERAL, iif=ends.iface, **common)
        reply = Packet("outbound", family, EPHEMERAL, ends.host, ends.peer, sport=port, oif=ends.iface,
                       ctstate="established", reply=True, **common)
    else:
        first = Packet("outbound", family, port, ends.host, ends.peer, sport=EPHEMERAL, oif=ends.iface, **common)
        reply = Packet("inbound", family, EPHEMERAL, ends.peer, ends.host, sport=port, iif=ends.iface,
                       ctstate="established", reply=True, **common)
    return first, reply


def reply_to(first: Packet, delivered: Packet, reply: Packet) -> Packet:
    """The reply as the kernel sees it, from where the first packet was delivered: a DNAT to
    another host makes it a forwarded packet from there (in by the device the first left by)."""
    if not delivered.forwarded:
        return replace(reply, dnat=delivered.dnat, orig_daddr=first.daddr, orig_dport=first.dport)
    toward_peer = (first.routes.device(first.saddr) if first.routes else None) or first.iif
    return replace(reply, direction="inbound", saddr=delivered.daddr, sport=delivered.dport, iif=delivered.oif,
                   oif=toward_peer, forwarded=True, dnat=delivered.dnat, orig_daddr=first.daddr,
                   orig_dport=first.dport)


def connection_verdict(ruleset: Ruleset, first: Packet, reply: Packet) -> tuple[PacketVerdict, bool, PacketVerdict]:
    """Combine the first packet's and the reply's verdicts: (verdict, reply_blocked, the first's).

    The reply is evaluated for every way the first packet may have been delivered (a match not
    understood may leave two); they must agree.
    """
    d1 = evaluate(ruleset, first)
    if d1.verdict != "allow":
        return d1, False, d1
    replies = [evaluate(ruleset, reply_to(first, p, reply)) for p in d1.delivered or (first,)]
    verdicts = {d.verdict for d in replies}
    if verdicts == {"allow"}:
        return d1, False, d1
    if verdicts == {"block"}:
        return replies[0], True, d1
    unknown = next((d for d in replies if d.verdict == "unknown"), None)
    reasons = unknown.reasons if unknown else ("the replies' verdict depends on how the first packet went",)
    return PacketVerdict("unknown", reasons=reasons), False, d1


def port_verdict(ruleset: Ruleset, key: tuple[Direction, Family, int], ends: Endpoints) -> PortVerdict:
    key = PortKey(*key)
    d, reply_blocked, first = connection_verdict(ruleset, *packets(*key, ends))
    generic = None
    if key.direction == "inbound" and ends.peer != GENERIC_PEER[key.family]:
        generic_ends = replace(ends, peer=GENERIC_PEER[key.family])
        generic = connection_verdict(ruleset, *packets(*key, generic_ends))[0]
    ways = first.delivered or ((first.deciding.packet,) if first.deciding and first.deciding.packet else ())
    delivered = ways[0] if len(ways) == 1 else None
    return PortVerdict(key, d.verdict, d.blocked_by, d.deciding, d.path, d.reasons, reply_blocked, generic,
                       delivered)


def ends_for(key: tuple[Direction, Family, int], ends: Endpoints) -> Endpoints:
    """The endpoints the analysis evaluates a port with: inbound from the prober, outbound to a
    generic mail server (never to the prober: a ban of the prober says nothing of mail out)."""
    return replace(ends, peer=GENERIC_PEER[key[1]]) if key[0] == "outbound" else ends


def port_verdicts(ruleset: Ruleset, context: AnalysisContext) -> list[PortVerdict]:
    """Every mail port of the context, inbound from the prober, outbound to a generic mail server."""
    out = []
    for family, ends in context.all_endpoints().items():
        keys = [("inbound", family, p) for p in context.inbound_ports]
        keys += [("outbound", family, p) for p in context.outbound_ports]
        out += [port_verdict(ruleset, k, ends_for(k, ends)) for k in keys]
    return out


def findings_for(verdicts: list[PortVerdict], prober: dict[str, str | None],
                 settings: Mapping[PortKey, str] | None = None) -> list[Finding]:
    """Group blocked ports by their deciding rule: one finding per rule and direction, naming
    the rule, what it does and the ports it blocks (its `ports`). `settings`: per port, the
    setting of the manager in charge of that rule (CSF's TCP_IN, a fail2ban jail)."""
    settings = settings or {}
    findings: list[Finding] = []
    blocked: dict[tuple[str, str], list[PortVerdict]] = defaultdict(list)
    for v in verdicts:
        if v.verdict == "block":
            blocked[(v.key.direction, v.blocked_by or "?")].append(v)
    for (direction, rule), vs in blocked.items():
        ports = _ports_text(vs)
        banned = _is_ban(rule)
        code = "firewall.prober_banned" if banned and direction == "inbound" else f"firewall.{direction}_blocked"
        if banned and direction == "inbound":
            summary = (f"{place_of(vs[0])} bans the prober's address ({prober.get(vs[0].key.family)}), "
                       f"not the port: inbound {ports}")
        else:
            what = "the replies of " if vs[0].reply_blocked else ""
            summary = f"{place_of(vs[0])} {_verb(vs[0])} {what}{direction} {ports}"
        managed = list(dict.fromkeys(settings[v.key] for v in vs if v.key in settings))
        published = [f"{v.key.label} is published: DNAT to {v.dnat_to} by {v.delivered.nat_by}; FORWARD decides, "
                     "not INPUT" for v in vs if v.forwarded and v.delivered]
        summary += "".join(f" ({m})" for m in managed)
        findings.append(Finding(code=code, severity="error", summary=summary, step="firewall",
                                evidence="\n".join([_rule_first(vs[0], _evidence(vs[0].path, rule)),
                                                    *managed, *published]),
                                ports=[v.key for v in vs]))
    findings += _source_specific(verdicts, prober)
    unknown = [v for v in verdicts if v.verdict == "unknown"]
    if unknown:
        reasons = sorted({r for v in unknown for r in v.reasons})
        findings.append(Finding(
            code="firewall.unknown", severity="warning", step="firewall",
            summary="Cannot tell what the firewall does to " + ", ".join(
                f"{v.key.direction} {v.key.label}" for v in unknown),
            evidence="\n".join(reasons), ports=[v.key for v in unknown]))
    return findings


def place_of(v: PortVerdict) -> str:
    """Where the verdict is decided, short: 'iptables INPUT rule 2', 'ip6tables INPUT policy DROP',
    'nft inet filter input handle 7'."""
    d = v.deciding
    if d is None or d.table is None or d.chain is None:
        return "the host firewall"
    t, chain = d.table, d.chain.name
    policy = f"policy {(d.chain.policy or 'accept').upper()}"
    if t.source == "nft":
        where = f"nft {t.family} {t.name} {chain}"
        return f"{where} handle {d.rule.handle}" if d.rule is not None else f"{where} {policy}"
    tool = ("iptables" if t.family == "ip" else "ip6tables") + ("-legacy" if t.source == "iptables-legacy" else "")
    table = "" if t.name == "filter" else f" -t {t.name}"
    return f"{tool}{table} {chain} " + (f"rule {d.rule.position}" if d.rule is not None else policy)


def _verb(v: PortVerdict) -> str:
    if v.deciding is None or v.deciding.rule is None:
        return "blocks"
    return "rejects" if v.reject else "drops"


def _ports_text(vs: list[PortVerdict]) -> str:
    """'25,143,465 (IPv4)' or '25,465 (IPv4, IPv6)'."""
    ports = ",".join(str(p) for p in sorted({v.key.port for v in vs}))
    families = sorted({"IPv6" if v.key.family == "ipv6" else "IPv4" for v in vs})
    return f"{ports} ({', '.join(families)})"


def _is_ban(rule: str) -> bool:
    low = rule.lower()
    csf_deny = " chain DENYIN " in rule and " -s " in rule
    return "f2b-" in low or "fail2ban" in low or "sshguard" in low or "crowdsec" in low or csf_deny


def input_bypassed(ruleset: Ruleset, verdicts: list[PortVerdict]) -> list[Finding]:
    """Published ports (DNATed to a container, decided in FORWARD) that rules in INPUT would block:
    those rules do not apply to them (ufw's and raw INPUT rules do not protect Docker's ports)."""
    out = []
    for v in verdicts:
        p = v.delivered
        if not (v.forwarded and p and v.key.direction == "inbound"):
            continue
        as_if_local = replace(p, daddr=p.orig_daddr or p.daddr, dport=p.orig_dport or p.dport, forwarded=False,
                              oif=None, orig_daddr=None, orig_dport=None)  # dnat kept: no nat chain runs again
        local = evaluate(ruleset, as_if_local)
        if local.verdict == "block" and local.blocked_by:
            out.append(Finding(
                code="firewall.input_bypassed", severity="warning", step="firewall",
                summary=f"{v.key.label} is published by a container (DNAT to {v.dnat_to}): `{local.blocked_by}` "
                        "does not apply to it — INPUT rules (and ufw's) never see published ports; filter them "
                        "in DOCKER-USER (or the forward hook)",
                evidence=_evidence(local.path, local.blocked_by) + f"\npublished by: {p.nat_by}",
                ports=[v.key]))
    return out


def _source_specific(verdicts: list[PortVerdict], prober: dict[str, str | None]) -> list[Finding]:
    out = []
    for v in verdicts:
        g = v.generic
        if g is None or g.verdict == v.verdict or "unknown" in (g.verdict, v.verdict):
            continue
        family = v.key.family
        if v.verdict == "allow":
            summary = (f"Port {v.key.label} is open to the prober ({prober.get(family)}) but the firewall "
                       f"blocks it for other internet sources")
            evidence = _evidence(g.path, g.blocked_by or "")
        else:
            summary = (f"Port {v.key.label} is blocked for the prober ({prober.get(family)}) only; "
                       f"other internet sources are allowed")
            evidence = _evidence(v.path, v.blocked_by or "")
        out.append(Finding(code="firewall.source_specific", severity="warning", summary=summary,
                           evidence=evidence, step="firewall", ports=[v.key]))
    return out


def _rule_first(v: PortVerdict, evidence: str) -> str:
    """The deciding rule as the firewall lists it, on the first line (where a reader looks
    first), then where it sits and the path."""
    d = v.deciding
    return f"{d.rule.text}\n{evidence}" if d is not None and d.rule is not None else evidence


def _evidence(path: tuple[str, ...], rule: str) -> str:
    walked = " -> ".join(path)
    return f"{rule}\npath: {walked}" if walked else rule
