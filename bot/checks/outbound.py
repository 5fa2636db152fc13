"""Outbound mail, for real: can the host connect to other mail servers on 25, 465, 587?

The targets come from MAILCHECK_OUTBOUND_TARGETS (bot/outbound.py), resolved by
mailcheck. For each target address of a family the host has, the host runs the
guide's `nc -vz -w 3 ADDRESS PORT` and `ip -o route get ADDRESS`. What came back,
as in the outside probes (bot/probes.py):

- `open`; `refused` (a TCP RST: the target, or something on the way, answered);
- `filtered` (no answer within 3 s: something drops the packets);
- `rejected` (an ICMP answer: `No route to host` while the host has a route, or
  `Network is unreachable` from a router; the kernel does not tell nc who sent it: the
  firewall step's verdict says whether it was the host's own firewall);
- `error`: the host has no route at all to the target (its own network configuration,
  not a block).

Per port and family the best answer wins (one target connecting shows the port is
not blocked). Whether a filtered or rejected port is blocked by the host firewall or
outside the host is the conclusion's call (guide step 5), with the firewall's verdict.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckContext, CheckInput, Results, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.models import OUTBOUND_PORTS, Command, CommandResult, Finding, PortKey, PortUpdate
from bot.outbound import Target

NC_WAIT = 3  # s: nc's connect timeout
RANK = ("open", "refused", "rejected", "filtered", "error")  # the best answer first
WHAT = {
    "filtered": "time out (filtered: something drops the packets)",
    "rejected": "are rejected (an ICMP answer: the host's own firewall or a router on the way)",
    "refused": "are refused (TCP RST: the target, or something on the way, answered)",
    "error": "cannot be made: the host has no route to them (its own network configuration, "
             "not a block)",
}
CODE = {"filtered": "outbound.filtered", "rejected": "outbound.rejected",
        "refused": "outbound.refused", "error": "outbound.no_route"}


def nc_argv(address: str, port: int) -> tuple[str, ...]:
    return ("nc", "-vz", "-w", str(NC_WAIT), address, str(port))


def route_argv(address: str) -> tuple[str, ...]:
    return ("ip", "-o", *(("-6",) if ":" in address else ()), "route", "get", address)


def host_families(ctx_facts) -> tuple[str, ...]:
    """IPv4 always; IPv6 when the host has a global IPv6 address."""
    return ("ipv4", "ipv6") if ctx_facts.global_address("ipv6") else ("ipv4",)


def attempts(targets: tuple[Target, ...], families: tuple[str, ...]) -> list[tuple[Target, str, str]]:
    """(target, family, address) for each target address of a family the host has."""
    return [(t, f, a) for t in targets for f in families if (a := t.address(f))]


class Outbound(Check):
    name = "outbound"
    ssh = "required"
    own_batch = True  # nc / curl may wait on the network

    def commands(self, ctx: CheckContext) -> list[Command]:
        out = []
        for target, _family, address in attempts(ctx.outbound or (), host_families(ctx.facts)):
            out += [Command(nc_argv(address, target.port), timeout=NC_WAIT + 3),
                    Command(route_argv(address), timeout=5)]
        return out

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        if inp.outbound is None:
            return StepOutcome("skipped", "off (MAILCHECK_OUTBOUND_TARGETS=off)")
        families = host_families(inp.facts)
        findings = [finding("outbound.unresolved", f"Outbound target {t.label} cannot be resolved "
                            f"from where mailcheck runs ({t.error}): not tested", evidence=t.error or "")
                    for t in inp.outbound if not t.addresses]
        tried = [(t, f, a, verdict(inp.results, a, t.port)) for t, f, a in attempts(inp.outbound, families)]
        if any(v[0] == "missing" for *_, v in tried):
            findings.append(finding("outbound.untested", "Outbound mail was not tested: nc is not "
                                    "installed on the host (the tools step proposes it)"))
        lines = [f"$ nc -vz -w {NC_WAIT} {a} {t.port}  ({t.host}) -> {v[0]}: {v[1]}" for t, _f, a, v in tried]
        ports = {}
        for family in families:
            for port in OUTBOUND_PORTS:
                mine = [(t, a, v) for t, f, a, v in tried if f == family and t.port == port
                        and v[0] != "missing"]
                if mine:
                    update, found = port_result(PortKey("outbound", family, port), mine)
                    ports[update[0]] = update[1]
                    findings += found
        status = status_of(findings)
        summary = ", ".join(f"{k.port}/{k.family}: {u.outside}" for k, u in sorted(ports.items())) \
            or "nothing tested"
        return StepOutcome(status, summary, "\n".join(lines), findings, ports=ports)


def verdict(results: Results, address: str, port: int) -> tuple[str, str]:
    """(open | refused | filtered | rejected | error | missing, what the host said)."""
    r = results.get(nc_argv(address, port))
    if r is None or r.missing:
        return "missing", "nc not installed" if r is not None else "not run"
    if r.timed_out:
        return "filtered", f"no answer within {NC_WAIT} s (the command timed out)"
    text = (r.stderr + r.stdout).strip()
    seen = read_nc_output(text, r.exit_status)
    low = text.lower()
    if seen != "error":
        return seen, text[:200]
    if "network is unreachable" in low and no_route(results.get(route_argv(address))):
        return "error", f"{text[:160]}; the host has no route to {address}"
    if any(w in low for w in ("no route to host", "network is unreachable", "permission denied",
                              "operation not permitted", "host is unreachable")):
        return "rejected", text[:200]
    return "error", text[:200]


def no_route(r: CommandResult | None) -> bool:
    return r is not None and r.exit_status not in (0, None) and "unreachable" in (r.stderr + r.stdout).lower()


def read_nc_output(text: str, exit_status: int | None = None) -> str:
    """open | refused | filtered | error from `nc -vz` output (either netcat)."""
    low = text.lower()
    if "succeeded!" in low or "ncat: connected to" in low or " open" in low.split("\n")[0]:
        return "open"
    if "connection refused" in low:
        return "refused"
    if "timed out" in low or "timeout" in low or "operation now in progress" in low:
        return "filtered"
    if exit_status == 0:
        return "open"
    return "error"


def port_result(key: PortKey, tried: list[tuple[Target, str, tuple[str, str]]]) \
        -> tuple[tuple[PortKey, PortUpdate], list[Finding]]:
    """The port's verdict (the best answer of its targets), and a finding when it is not open."""
    best = min((v[0] for _t, _a, v in tried), key=RANK.index)
    detail = "; ".join(f"{t.host} ({a}): {v[0]}" for t, a, v in tried)
    update = (key, PortUpdate(outside=best, detail=detail))
    if best == "open":
        return update, []
    who = ", ".join(f"{t.host} ({a})" for t, a, _v in tried)
    summary = f"Outbound {key.label}: connections from the host to {who} {WHAT[best]}"
    evidence = "\n".join(f"{t.host} ({a}) port {key.port}: {v[1]}" for t, a, v in tried)
    return update, [finding(CODE[best], summary, evidence=evidence,
                            severity="error" if key.port == 25 and best != "refused" else None)]
