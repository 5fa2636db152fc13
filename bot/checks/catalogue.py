"""The finding-code catalogue: every code a check may emit, in one place.

Codes are a contract (the JSON report's `findings[].code`); README.md
lists them. A code is never reused for a different meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import Finding, PortKey, Role, Severity


@dataclass(frozen=True)
class Code:
    """A finding code. `role`: what bot.diagnosis makes of it: a cause (the default), a
    symptom (seen from outside; explained by the causes on its ports) or a note (neither)."""

    code: str
    step: str
    severity: Severity
    meaning: str
    role: Role = "cause"


CATALOGUE: dict[str, Code] = {c.code: c for c in (
    Code("tools.missing", "tools", "info",
         "Diagnostic tools of the guide (dig, lsof, nc, whois) are missing; the fix installs them.", role="note"),
    Code("service.down", "services", "error",
         "A mail daemon is installed but not running (systemd unit inactive, or no process)."),
    Code("service.loopback_only", "services", "warning",
         "A daemon listens on the port on loopback only (Debian's exim default): "
         "nothing outside can connect (error for port 25)."),
    Code("service.not_listening", "services", "warning",
         "Nothing listens on the port at all (error for port 25, warning otherwise)."),
    Code("service.container", "services", "info",
         "A container serves the port: its engine's process (docker-proxy, conmon, rootlessport, "
         "slirp4netns, pasta) holds it, or a nat rule forwards it there; the container, its image "
         "and state as `docker` / `podman` report them.", role="note"),
    Code("service.container_down", "services", "error",
         "A container publishes the port but is not running, and nothing else serves it; the fix "
         "restarts it through its engine (warning when port 25 is not among its ports)."),
    Code("service.forwarded", "services", "info",
         "No process of the host listens on the port: a nat rule (DNAT / REDIRECT) forwards it "
         "elsewhere, to an address no container engine names.", role="note"),
    Code("service.unknown", "services", "warning",
         "Neither ss nor lsof gave a usable listing: who listens is unknown.", role="note"),
    Code("port.filtered", "ports", "warning",
         "The outside probe got no answer (timeout): something drops the packets "
         "(error for port 25).", role="symptom"),
    Code("port.refused", "ports", "warning",
         "The outside probe was refused (RST): nothing listens, or a REJECT rule "
         "(error for port 25).", role="symptom"),
    Code("port.error", "ports", "warning",
         "The outside probe failed otherwise (no route, ICMP unreachable, ...).", role="symptom"),
    Code("port.outbound_failed", "ports", "warning",
         "The optional outbound test (`nc -vz` from the host to a configured outside address) "
         "failed: filtered or refused (error for port 25).", role="symptom"),
    Code("smtp.no_starttls", "ports", "warning",
         "The SMTP server on 25/587 answers EHLO without offering STARTTLS."),
    Code("smtp.bad_greeting", "ports", "warning",
         "The port is open but no SMTP 220 greeting / EHLO answer came back."),
    Code("tls.handshake_failed", "ports", "warning",
         "The port is open but the TLS handshake (465/993) failed."),
    Code("tls.self_signed", "ports", "info",
         "The certificate on 465/993 is self-signed (reported, not failed).", role="note"),
    Code("tls.expired", "ports", "warning", "The certificate on 465/993 has expired."),
    Code("firewall.inbound_blocked", "firewall", "error",
         "The host firewall blocks inbound mail ports (grouped by deciding rule)."),
    Code("firewall.outbound_blocked", "firewall", "error",
         "The host firewall blocks outbound SMTP ports (grouped by deciding rule)."),
    Code("firewall.prober_banned", "firewall", "error",
         "The firewall bans the prober's address (fail2ban & co.), not the port."),
    Code("firewall.source_specific", "firewall", "warning",
         "The verdict for the prober differs from the one for a generic internet source."),
    Code("firewall.unknown", "firewall", "warning",
         "The evaluator cannot tell what the firewall does to these ports.", role="note"),
    Code("firewall.fix_not_planned", "firewall", "info",
         "A block has no automatic fix (a ban, a source-limited rule, a case the planner refuses).", role="note"),
    Code("provider.port_blocked", "conclusion", "error",
         "Firewall allows, a daemon listens publicly, yet the outside probe is filtered: "
         "the provider's network blocks the port (guide step 5)."),
    Code("check.step_failed", "", "error",
         "A step could not run (SSH failure, timeout, missing commands, crash); "
         "its message names host and step."),
)}


def finding(code: str, summary: str, *, evidence: str = "", severity: Severity | None = None,
            fixes: list[str] | None = None, step: str | None = None,
            ports: list[PortKey] | None = None) -> Finding:
    """A Finding whose code must be in the catalogue (KeyError otherwise), with its role;
    `ports`: the mail ports it affects."""
    entry = CATALOGUE[code]
    return Finding(code=code, severity=severity or entry.severity, summary=summary,
                   evidence=evidence, fixes=list(fixes or []), step=step or entry.step,
                   role=entry.role, ports=sorted(set(ports or [])))


def role_of(code: str) -> Role:
    """The catalogue's role for a code; a code it does not know is a cause."""
    entry = CATALOGUE.get(code)
    return entry.role if entry is not None else "cause"


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table (README.md embeds it)."""
    rows = ["| code | step | severity | role | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{c.code}` | {c.step or 'any'} | {c.severity} | {c.role} | {c.meaning} |"
             for c in CATALOGUE.values()]
    return "\n".join(rows)
