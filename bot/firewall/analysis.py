"""Per-port verdicts for a mail host, from one Ruleset.

A connection works only when its first packet (NEW) passes and the replies
(ESTABLISHED) pass too: both are evaluated. Inbound packets come from the
address the outside probe used, so `verdict` speaks of the same packet as the
probe. Every other peer address is accounted for exactly, never by a sample:
bot/firewall/peers.py cuts the address space into regions the ruleset cannot
tell apart, one member of each is evaluated, and `peers` holds the verdict for
addresses in general (the one covering the most addresses) and the ranges
that differ, each with its deciding rule. Outbound ports have no prober: their
verdict is the general one, and a deny list is an exception, not a block.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot.firewall import peers as peer_space
from bot.firewall.evaluate import Outcome, PacketVerdict, describe, evaluate
from bot.firewall.model import CONSULTED, Packet, Routes, Ruleset
from bot.models import AddressException, Direction, Family, Finding, FirewallVerdict, PortKey

EPHEMERAL = 40000
# Peer regions walked per port (a region that agrees with a walk on what it consulted reuses it);
# beyond, the exceptions are not listed. Bounds the CPU a check spends here (the steps run on
# the event loop): 1,000 per-address ban rules on the mail ports cost 64 walks per port.
MAX_REGIONS = 64


@dataclass(frozen=True)
class Endpoints:
    host: str  # the host's address in this family
    peer: str | None  # the prober (inbound); None: no particular peer (outbound, not probed)
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
        """The host and the prober in this family (peer None when not probed)."""
        host = self.host_v4 if family == "ipv4" else self.host_v6
        if host is None:
            return None
        prober = self.prober_v4 if family == "ipv4" else self.prober_v6
        local = frozenset({host, *self.host_addrs, "127.0.0.1", "::1"})
        routes = self.routes_v4 if family == "ipv4" else self.routes_v6
        return Endpoints(host, prober, self.inbound_iface, local, routes)

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
    peers: Peers | None = None  # every peer address: the general verdict and the ranges that differ
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


@dataclass(frozen=True)
class Peers:
    """One port's verdict for every peer address (sources inbound, destinations outbound)."""

    general: FirewallVerdict  # for the addresses no exception lists
    exceptions: tuple[AddressException, ...] | None  # None: not listed (see note)
    note: str = ""


Connection = tuple[PacketVerdict, bool, PacketVerdict]  # connection_verdict's answer


def port_verdict(ruleset: Ruleset, key: tuple[Direction, Family, int], ends: Endpoints,
                 regions: list[peer_space.Region] | None = None) -> PortVerdict:
    """The port's verdict: for the prober's connection when ends.peer is set (inbound), else the
    general one (every peer address accounted for, see `peer_verdicts`). `regions`: the family's
    peer regions of this ruleset, when the caller has them."""
    key = PortKey(*key)
    peers, general = peer_verdicts(ruleset, key, ends, regions)
    if ends.peer is not None:
        general = connection_verdict(ruleset, *packets(*key, ends))
    d, reply_blocked, first = general
    ways = first.delivered or ((first.deciding.packet,) if first.deciding and first.deciding.packet else ())
    delivered = ways[0] if len(ways) == 1 else None
    return PortVerdict(key, d.verdict, d.blocked_by, d.deciding, d.path, d.reasons, reply_blocked, peers,
                       delivered)


def peer_verdicts(ruleset: Ruleset, key: PortKey, ends: Endpoints,
                  regions: list[peer_space.Region] | None = None) -> tuple[Peers, Connection]:
    """Every peer region's verdict (bot/firewall/peers.py): the general one (covering the most
    addresses; its largest region's connection is returned) and the ranges that differ.

    Regions are taken largest first. A region that agrees with an evaluated one on everything
    that evaluation consulted (the address matches it tested, the interface, addrtype) gets
    the same verdict without a walk: a ban list the port's packets never reach costs nothing.
    At most MAX_REGIONS walks: past that, the general verdict stands only if the regions left
    could not outweigh it, and the exceptions are not listed."""
    regions = sorted(peer_regions(ruleset, key.family, ends) if regions is None else regions,
                     key=lambda r: -r.size)
    known: list[_Known] = []
    done: list[tuple[peer_space.Region, Connection]] = []
    left = []
    for region in regions:
        iface = region.iface or ends.iface
        conn = next((k.conn for k in known if k.holds_for(region, iface)), None)
        if conn is None and len(known) < MAX_REGIONS:
            known.append(_evaluated(ruleset, key, replace(ends, peer=region.member, iface=iface), region))
            conn = known[-1].conn
        if conn is None:
            left.append(region)
        else:
            done.append((region, conn))
    weight: dict[str, int] = defaultdict(int)
    for region, conn in done:
        weight[conn[0].verdict] += region.size
    general, heaviest = max(weight.items(), key=lambda kv: kv[1])
    top = next(conn for region, conn in done if conn[0].verdict == general)
    if not left:
        return Peers(general, _exceptions(done, general, key.family)), top
    runner_up = max((w for v, w in weight.items() if v != general), default=0)
    note = (f"more than {MAX_REGIONS} address ranges are treated differently by the rules "
            f"({len(left)} not evaluated): the exceptions are not listed")
    if heaviest > runner_up + sum(r.size for r in left):
        return Peers(general, None, note), top
    unknown = PacketVerdict("unknown", reasons=(note,))
    return Peers("unknown", None, note), (unknown, False, unknown)


@dataclass(frozen=True)
class _Known:
    """One region's evaluation, and what it consulted: it holds for every region that agrees there."""

    tested: frozenset  # the address matches consulted (peers.signature_key)
    member: frozenset  # those of them holding the region
    iface: tuple[bool, str | None]  # (consulted?, the interface)
    own: tuple[bool, frozenset]  # (addrtype consulted?, the host's address it is)
    conn: Connection

    def holds_for(self, region: peer_space.Region, iface: str | None) -> bool:
        return ((region.matches & self.tested) == self.member
                and (not self.iface[0] or self.iface[1] == iface)
                and (not self.own[0] or self.own[1] == region.own))


def _evaluated(ruleset: Ruleset, key: PortKey, ends: Endpoints, region: peer_space.Region) -> _Known:
    seen: set = set()
    token = CONSULTED.set(seen)
    try:
        conn = connection_verdict(ruleset, *packets(*key, ends))
    finally:
        CONSULTED.reset(token)
    tested = {k for t in seen if isinstance(t, tuple) and (k := peer_space.signature_key(t, key.family))}
    return _Known(frozenset(tested), region.matches & frozenset(tested), ("iface" in seen, ends.iface),
                  ("addrtype" in seen, region.own), conn)


def _exceptions(done, general: str, family: str) -> tuple[AddressException, ...]:
    groups: dict[tuple[str, str | None], list[tuple[int, int]]] = defaultdict(list)
    for region, (d, _, _) in done:
        if d.verdict != general:
            groups[(d.verdict, _deciding_rule(d))] += region.ranges
    out = [AddressException(networks=peer_space.networks(sorted(r), family), firewall=v, rule=rule)
           for (v, rule), r in groups.items()]
    return tuple(sorted(out, key=lambda e: e.networks))


def _deciding_rule(d: PacketVerdict) -> str | None:
    if d.verdict == "block":
        return d.blocked_by
    if d.verdict == "unknown":
        return "; ".join(d.reasons) or None
    at = d.deciding
    return describe(at.table, at.chain, at.rule) if at and at.table and at.chain else None


def peer_regions(ruleset: Ruleset, family: Family, ends: Endpoints) -> list[peer_space.Region]:
    return peer_space.regions(ruleset, family, ends.routes, ends.local_addrs)


def ends_for(key: tuple[Direction, Family, int], ends: Endpoints) -> Endpoints:
    """The endpoints the analysis evaluates a port with: inbound from the prober, outbound to
    every destination (no particular peer: a ban of the prober says nothing of mail out)."""
    return replace(ends, peer=None) if key[0] == "outbound" else ends


def port_verdicts(ruleset: Ruleset, context: AnalysisContext) -> list[PortVerdict]:
    """Every mail port of the context, inbound from the prober, outbound to every destination."""
    out = []
    for family, ends in context.all_endpoints().items():
        keys = [("inbound", family, p) for p in context.inbound_ports]
        keys += [("outbound", family, p) for p in context.outbound_ports]
        regions = peer_regions(ruleset, family, ends)
        out += [port_verdict(ruleset, k, ends_for(k, ends), regions) for k in keys]
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
    findings += address_exceptions(verdicts)
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
    """Inbound ports whose verdict for the prober differs from the one for sources in general."""
    out = []
    for v in verdicts:
        g = v.peers
        if g is None or v.key.direction != "inbound" or g.general == v.verdict or "unknown" in (g.general, v.verdict):
            continue
        who = f"the prober ({prober.get(v.key.family)})"
        if v.verdict == "allow":
            summary = f"Port {v.key.label} is open to {who} but blocked for sources in general"
        else:
            summary = f"Port {v.key.label} is blocked for {who} but open to sources in general"
        out.append(Finding(code="firewall.source_specific", severity="warning", summary=summary,
                           evidence=_evidence(v.path, v.blocked_by or _deciding_rule(
                               PacketVerdict(v.verdict, v.deciding)) or ""), step="firewall", ports=[v.key]))
    return out


WORDS = {"block": "blocked", "allow": "allowed", "unknown": "unknown"}
MAX_LISTED = 8  # networks named in a finding's summary (the evidence and the report list them all)


def address_exceptions(verdicts: list[PortVerdict]) -> list[Finding]:
    """One finding per direction, verdict and rule: the peer ranges treated unlike the rest
    ("blocked for 192.0.2.0/24 (rule ...)"); and the ports whose ranges were too many to list."""
    groups: dict[tuple, list[PortVerdict]] = defaultdict(list)
    unlisted = []
    for v in verdicts:
        if v.peers is None:
            continue
        if v.peers.exceptions is None:
            unlisted.append(v)
        for e in v.peers.exceptions or ():  # one finding per general verdict too: it is stated for all
            groups[(v.key.direction, e, v.peers.general)].append(v)
    out = []
    for (direction, e, general), vs in groups.items():
        nets = ", ".join(e.networks[:MAX_LISTED]) + (f" and {len(e.networks) - MAX_LISTED} more"
                                                      if len(e.networks) > MAX_LISTED else "")
        word = WORDS[e.firewall]
        to = "for" if direction == "inbound" else "to"
        general = WORDS[general]
        out.append(Finding(
            code="firewall.address_exceptions", severity="info", step="firewall",
            summary=f"{direction.capitalize()} {', '.join(v.key.label for v in vs)}: {word} {to} {nets} "
                    f"({e.rule or 'no rule'}); {general} for other addresses",
            evidence="\n".join([f"{word} {to}: {' '.join(e.networks)}", f"deciding: {e.rule or 'no rule'}"]),
            ports=[v.key for v in vs]))
    for v in unlisted:
        note = v.peers.note if v.peers else ""
        out.append(Finding(code="firewall.address_exceptions", severity="info", step="firewall",
                           summary=f"{v.key.direction.capitalize()} {v.key.label}: {note}", evidence=note,
                           ports=[v.key]))
    return out


def _rule_first(v: PortVerdict, evidence: str) -> str:
    """The deciding rule as the firewall lists it, on the first line (where a reader looks
    first), then where it sits and the path."""
    d = v.deciding
    return f"{d.rule.text}\n{evidence}" if d is not None and d.rule is not None else evidence


def _evidence(path: tuple[str, ...], rule: str) -> str:
    walked = " -> ".join(path)
    return f"{rule}\npath: {walked}" if walked else rule
