"""What would the kernel do with a packet of a TCP connection?

Walks every base chain on the packet's hooks, in priority order, as netfilter
does: an accept ends only its own base chain, a drop or reject ends
everything; jump pushes, goto replaces, return (or a user chain's end) pops,
a base chain's end applies its policy.

The path: a packet this host sends meets output, then postrouting. A packet
that arrives meets prerouting, where nat chains (the connection's first packet
only) may DNAT or REDIRECT it; the first translation ends the nat chains of
that hook. Then the routing decision: a packet for this host (not translated,
or translated to one of its addresses) meets input; a translated packet for
another host is forwarded when the host forwards (forward, then postrouting,
leaving by its route's device), dropped when it does not. A reply of a
forwarded connection is forwarded too.

A match the model does not understand (None) forks the walk: one branch as
if it matched, one as if not. The verdict is certain only when every branch
agrees; otherwise it is "unknown" and says which match was not understood.
Never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from bot.firewall.model import Chain, Packet, Rule, Ruleset, Table
from bot.models import FirewallVerdict

DNAT_HOOKS = ("prerouting", "output")  # where nat chains translate the destination
MAX_BRANCHES = 256
MAX_DEPTH = 64


@dataclass(frozen=True)
class Outcome:
    kind: Literal["accept", "block", "unknown"]
    table: Table | None = None
    chain: Chain | None = None
    rule: Rule | None = None
    reject: bool = False
    path: tuple[str, ...] = ()
    reason: str = ""
    packet: Packet | None = None  # as it left the chain or was decided (conntrack state, a DNAT)

    @property
    def by_policy(self) -> bool:
        return self.rule is None and self.chain is not None


@dataclass(frozen=True)
class PacketVerdict:
    """The kernel's verdict on one packet, with the rule or policy that decided it."""

    verdict: FirewallVerdict
    deciding: Outcome | None = None
    path: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # why the verdict is unknown
    delivered: tuple[Packet, ...] = ()  # allow: the packet as delivered (translated?), each way it may go

    @property
    def reject(self) -> bool:
        return bool(self.deciding and self.deciding.reject)

    @property
    def blocked_by(self) -> str | None:
        """The deciding rule or policy, as the firewall shows it."""
        d = self.deciding
        if self.verdict != "block" or d is None:
            return None
        if d.chain is None or d.table is None:  # not a rule: e.g. the host does not forward
            return d.reason or None
        return describe(d.table, d.chain, d.rule)


def describe(table: Table, chain: Chain, rule: Rule | None) -> str:
    if rule is None:
        return f"{table.label}: policy {(chain.policy or 'accept').upper()} of chain {chain.name}"
    where = f"handle {rule.handle}" if table.source == "nft" else f"rule {rule.position}"
    return f"{table.label} chain {chain.name} {where}: {rule.text}"


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_BRANCHES


def _step_label(table: Table, chain: Chain, rule: Rule | None) -> str:
    return f"{table.label}/{chain.name}" + (f"#{rule.position}" if rule else ":policy")


def run_chain(table: Table, base: Chain, p: Packet, budget: _Budget | None = None) -> list[Outcome]:
    """All possible outcomes of one base chain for packet p."""
    budget = budget or _Budget()
    return _walk(table, base, ((base, 0),), (), p, budget)





def _walk(table, base, stack, path, p, budget) -> list[Outcome]:
    while True:
        if len(stack) > MAX_DEPTH:
            return [Outcome("unknown", table, base, path=path, reason="chain nesting too deep (loop?)")]
        if not stack:
            kind = "block" if base.policy == "drop" else "accept"
            return [Outcome(kind, table, base, path=(*path, _step_label(table, base, None)), packet=p)]
        chain, i = stack[-1]
        if i >= len(chain.rules):
            stack = stack[:-1]
            continue
        rule = chain.rules[i]
        stack = (*stack[:-1], (chain, i + 1))
        hit = rule.test(p)
        if hit is False:
            continue
        if hit is None:
            budget.left -= 1
            if budget.left <= 0:
                return [Outcome("unknown", table, chain, rule, path=path, reason="too many uncertain matches")]
            unknown = [m.text for m in rule.matches if m.test(p) is None]
            reason = f"{_step_label(table, chain, rule)} `{rule.text}`: not understood: {', '.join(unknown)}"
            taken = _apply(table, base, stack, path, p, budget, chain, rule)
            skipped = _walk(table, base, stack, path, p, budget)
            outs = taken + skipped
            kinds = {o.kind for o in outs}
            if len(kinds) > 1 or "unknown" in kinds:
                return [Outcome("unknown", table, chain, rule, path=path, reason=reason)]
            return outs
        return _apply(table, base, stack, path, p, budget, chain, rule)


def _apply(table, base, stack, path, p, budget, chain, rule) -> list[Outcome]:
    path = (*path, _step_label(table, chain, rule))
    v = rule.verdict
    if v.kind == "accept":
        return [Outcome("accept", table, chain, rule, path=path, packet=p)]
    if v.kind in ("drop", "reject"):
        return [Outcome("block", table, chain, rule, reject=v.kind == "reject", path=path, packet=p)]
    if v.kind == "continue":
        if v.set_ctstate:
            p = replace(p, ctstate=v.set_ctstate)
        return _walk(table, base, stack, path, p, budget)
    if v.kind in ("jump", "goto"):
        target = table.chains.get(v.chain or "")
        if target is None or target.is_base:
            return [Outcome("unknown", table, chain, rule, path=path,
                            reason=f"{v.kind} to unknown chain {v.chain!r}")]
        stack = stack[:-1] if v.kind == "goto" else stack
        return _walk(table, base, (*stack, (target, 0)), path, p, budget)
    if v.kind == "return":
        return _walk(table, base, stack[:-1], path, p, budget)
    if v.kind == "dnat" and base.type == "nat" and base.hook == "prerouting":  # (nat OUTPUT's: unknown)
        return [Outcome("accept", table, chain, rule, path=path, packet=_translated(p, table, chain, rule))]
    return [Outcome("unknown", table, chain, rule, path=path,
                    reason=f"{_step_label(table, chain, rule)} `{rule.text}`: verdict not understood")]


def _translated(p: Packet, table: Table, chain: Chain, rule: Rule) -> Packet:
    """p after the rule's DNAT (to_addr None: this host, as REDIRECT; to_port None: unchanged)."""
    v = rule.verdict
    return replace(p, daddr=v.to_addr or p.daddr, dport=v.to_port or p.dport, dnat=True,
                   orig_daddr=p.daddr, orig_dport=p.dport, nat_by=describe(table, chain, rule))


def base_chains(ruleset: Ruleset, p: Packet, hooks: tuple[str, ...]) -> list[tuple[Table, Chain]]:
    """Every base chain of these hooks the packet meets, in the order the kernel runs them.

    nat chains see only the first packet of a connection (conntrack NEW; not
    replies, not untracked packets), and none after a translation.
    """
    found = [
        (hooks.index(c.hook), c.priority, n, t, c)
        for n, t in enumerate(ruleset.tables)
        if t.applies_to(p.family)
        for c in t.chains.values()
        if c.hook in hooks and (c.type != "nat" or (p.ctstate == "new" and not p.reply))
    ]
    found.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(t, c) for *_, t, c in found]


def evaluate(ruleset: Ruleset, p: Packet) -> PacketVerdict:
    """The kernel's verdict on packet p under ruleset, with the deciding rule."""
    if ruleset.problems:
        return PacketVerdict("unknown", reasons=tuple(ruleset.problems))
    budget = _Budget()
    if p.direction == "outbound":
        outcomes = _hooks(ruleset, ("output", "postrouting"), p, (), budget)
    elif p.forwarded:  # a reply of a forwarded connection: the caller knows where it goes
        outcomes = _hooks(ruleset, ("prerouting",), p, (), budget, _forward)
    else:
        outcomes = _hooks(ruleset, ("prerouting",), p, (), budget, _route)
    kinds = {o.kind for o in outcomes}
    if kinds == {"block"}:
        first = outcomes[0]
        return PacketVerdict("block", first, first.path)
    if kinds == {"accept"}:
        delivered = tuple(dict.fromkeys(o.packet or p for o in outcomes))
        return PacketVerdict("allow", outcomes[0], outcomes[0].path, delivered=delivered)
    reasons = [o.reason for o in outcomes if o.reason] or ["the verdict depends on matches not understood"]
    return PacketVerdict("unknown", next((o for o in outcomes if o.kind == "unknown"), None), (), tuple(reasons))


Then = Callable[[Ruleset, Packet, tuple[str, ...], _Budget], list[Outcome]]


def _hooks(ruleset, hooks, p, path, budget, then: Then | None = None) -> list[Outcome]:
    return _chain_from(ruleset, base_chains(ruleset, p, hooks), 0, p, path, budget, then)


def _chain_from(ruleset, chains, i, p, path, budget, then, last: Outcome | None = None) -> list[Outcome]:
    """The base chains from the i-th on. An allow names the last filter accept on input or
    forward (`last`), as the kernel's trace shows its deciding verdict."""
    if i >= len(chains):
        if then:
            return then(ruleset, p, path, budget)
        return [replace(last, path=path, packet=p) if last else Outcome("accept", path=path, packet=p)]
    table, chain = chains[i]
    if chain.type == "nat" and p.dnat and chain.hook in DNAT_HOOKS:  # translated: no more DNAT here
        return _chain_from(ruleset, chains, i + 1, p, path, budget, then, last)
    results: list[Outcome] = []
    for out in run_chain(table, chain, p, budget):
        out = replace(out, path=(*path, *out.path))
        if out.kind == "accept":
            deciding = out if chain.type == "filter" and chain.hook in ("input", "forward") else last
            results += _chain_from(ruleset, chains, i + 1, out.packet or p, out.path, budget, then, deciding)
        else:
            results.append(out)
    return results


def _route(ruleset, p, path, budget) -> list[Outcome]:
    """The routing decision after prerouting: this host (input), or another (forward). An
    outcome decided here keeps the packet as translated (PortVerdict.delivered: where the nat
    rule sends it, even when what happens next is not known)."""
    if not p.dnat or p.daddr in p.local_addrs:
        original = p.original()
        if p.dnat and p.dport != original[3]:
            return [Outcome("unknown", path=path, packet=p, reason=(
                f"{p.nat_by}: translated to this host's port {p.dport}: the connection is answered by "
                f"whatever listens on {p.dport}, not on {original[3]}"))]
        return _hooks(ruleset, ("input",), p, path, budget)
    routes, sysctl = p.routes, FORWARDING[p.family]
    if routes is None or routes.forwarding is None:
        return [Outcome("unknown", path=path, packet=p, reason=(
            f"{p.nat_by}: translated to {p.daddr}, another host: whether this host forwards "
            f"({sysctl}) and by which route is not known"))]
    if not routes.forwarding:
        return [Outcome("block", path=(*path, f"{sysctl} = 0"), packet=p, reason=(
            f"{p.nat_by}: translated to {p.daddr}, another host, and this host does not forward "
            f"({sysctl} = 0)"))]
    oif = routes.device(p.daddr)
    if oif is None:
        return [Outcome("unknown", path=path, packet=p, reason=(
            f"{p.nat_by}: translated to {p.daddr}: no plain route to it in the main table"))]
    return _forward(ruleset, replace(p, forwarded=True, oif=oif), path, budget)


def _forward(ruleset, p, path, budget) -> list[Outcome]:
    return _hooks(ruleset, ("forward", "postrouting"), p, path, budget)


FORWARDING = {"ipv4": "net.ipv4.ip_forward", "ipv6": "net.ipv6.conf.all.forwarding"}
