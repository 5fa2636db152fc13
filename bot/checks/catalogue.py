"""The finding-code catalogue: every code a check may emit, in one place.

Codes are a contract (the JSON report's `findings[].code`); README.md
lists them. A code is never reused for a different meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import Finding, Severity


@dataclass(frozen=True)
class Code:
    code: str
    step: str
    severity: Severity
    meaning: str


CATALOGUE: dict[str, Code] = {c.code: c for c in (
    Code("tools.missing", "tools", "info",
         "Diagnostic tools of the guide (dig, lsof, nc, whois) are missing; the fix installs them."),
    Code("service.down", "services", "error",
         "A mail daemon is installed but not running (systemd unit inactive, or no process)."),
    Code("service.loopback_only", "services", "warning",
         "A daemon listens on the port on loopback only (Debian's exim default): "
         "nothing outside can connect (error for port 25)."),
    Code("service.not_listening", "services", "warning",
         "Nothing listens on the port at all (error for port 25, warning otherwise)."),
    Code("service.unknown", "services", "warning",
         "Neither ss nor lsof gave a usable listing: who listens is unknown."),
    Code("port.filtered", "ports", "warning",
         "The outside probe got no answer (timeout): something drops the packets "
         "(error for port 25)."),
    Code("port.refused", "ports", "warning",
         "The outside probe was refused (RST): nothing listens, or a REJECT rule "
         "(error for port 25)."),
    Code("port.error", "ports", "warning",
         "The outside probe failed otherwise (no route, ICMP unreachable, ...)."),
    Code("port.outbound_failed", "ports", "warning",
         "The optional outbound test (`nc -vz` from the host to a configured outside address) "
         "failed: filtered or refused (error for port 25)."),
    Code("smtp.no_starttls", "ports", "warning",
         "The SMTP server on 25/587 answers EHLO without offering STARTTLS."),
    Code("smtp.bad_greeting", "ports", "warning",
         "The port is open but no SMTP 220 greeting / EHLO answer came back."),
    Code("tls.handshake_failed", "ports", "warning",
         "The port is open but the TLS handshake (465/993) failed."),
    Code("tls.self_signed", "ports", "info",
         "The certificate on 465/993 is self-signed (reported, not failed)."),
    Code("tls.expired", "ports", "warning", "The certificate on 465/993 has expired."),
    Code("firewall.inbound_blocked", "firewall", "error",
         "The host firewall blocks inbound mail ports (grouped by deciding rule)."),
    Code("firewall.outbound_blocked", "firewall", "error",
         "The host firewall blocks outbound SMTP ports (grouped by deciding rule)."),
    Code("firewall.prober_banned", "firewall", "error",
         "The firewall bans the prober's address (fail2ban & co.), not the port."),
    Code("firewall.source_specific", "firewall", "warning",
         "The verdict for the prober differs from the one for source addresses in general (the "
         "verdict covering the most addresses)."),
    Code("firewall.address_exceptions", "firewall", "info",
         "Some peer address ranges get another verdict than addresses in general, e.g. a deny list: "
         "\"blocked for 192.0.2.0/24 (rule ...)\" (inbound: sources; outbound: destinations); or they "
         "were too many to list."),
    Code("firewall.unknown", "firewall", "warning",
         "The evaluator cannot tell what the firewall does to these ports."),
    Code("firewall.fix_not_planned", "firewall", "info",
         "A block has no automatic fix (a ban, a source-limited rule, a case the planner refuses)."),
    Code("firewall.input_bypassed", "firewall", "warning",
         "A port published by a container (DNAT, decided in FORWARD) has INPUT rules (ufw's, raw "
         "iptables) meant to block it: they do not apply to it."),
    Code("firewall.manager", "firewall", "info",
         "A firewall manager (CSF) builds the rules from its configuration: its settings decide the "
         "ports, and a raw rule is undone at its next restart (warning in CSF's TESTING mode)."),
    Code("firewall.ipv6_unfiltered", "firewall", "warning",
         "The firewall manager leaves IPv6 unfiltered (CSF's IPV6 = \"0\")."),
    Code("firewall.engine_rules_flushed", "firewall", "warning",
         "A restart of the firewall manager (csf -r) flushes the container engine's chains: published "
         "ports stop working until the engine restarts."),
    Code("provider.port_blocked", "conclusion", "error",
         "Firewall allows, a daemon listens publicly, yet the outside probe is filtered: "
         "the provider's network blocks the port (guide step 5)."),
    Code("check.step_failed", "", "error",
         "A step could not run (SSH failure, timeout, missing commands, crash); "
         "its message names host and step."),
)}


def finding(code: str, summary: str, *, evidence: str = "", severity: Severity | None = None,
            fixes: list[str] | None = None, step: str | None = None) -> Finding:
    """A Finding whose code must be in the catalogue (KeyError otherwise)."""
    entry = CATALOGUE[code]
    return Finding(code=code, severity=severity or entry.severity, summary=summary,
                   evidence=evidence, fixes=list(fixes or []), step=step or entry.step)


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table (README.md embeds it)."""
    rows = ["| code | step | severity | meaning |", "|---|---|---|---|"]
    rows += [f"| `{c.code}` | {c.step or 'any'} | {c.severity} | {c.meaning} |"
             for c in CATALOGUE.values()]
    return "\n".join(rows)
