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
         "The outside probe was refused (TCP RST): nothing listens, or a REJECT rule with "
         "tcp-reset (error for port 25).", role="symptom"),
    Code("port.rejected", "ports", "warning",
         "The outside probe was answered with an ICMP destination-unreachable (e.g. "
         "host-prohibited, admin-prohibited, port-unreachable): the summary says who sent it, the "
         "host itself (its firewall) or a router on the path (a block outside the host) "
         "(error for port 25).", role="symptom"),
    Code("port.error", "ports", "warning",
         "The outside probe failed otherwise (no route from here, no neighbour answer, a "
         "firewall where mailcheck runs, an ICMP time-exceeded, ...).", role="symptom"),
    Code("smtp.no_starttls", "ports", "warning",
         "The SMTP server on 25/587 answers EHLO without offering STARTTLS."),
    Code("smtp.bad_greeting", "ports", "warning",
         "The port is open but no SMTP 220 greeting / EHLO answer came back within "
         "MAILCHECK_GREETING_TIMEOUT."),
    Code("port.slow_greeting", "ports", "warning",
         "The greeting came within MAILCHECK_GREETING_TIMEOUT but took 3 s or more (the SMTP 220 on "
         "25/587, the first TLS answer on 465/993): its duration and likely cause (a reverse DNS "
         "lookup on a silent resolver, a tarpit; info for postscreen's `220-` pre-greeting).", role="symptom"),
    Code("tls.handshake_failed", "ports", "warning",
         "The port is open but the TLS handshake (465/993) failed."),
    Code("tls.plaintext", "ports", "warning",
         "A server answered in plain text where a TLS ServerHello was expected, e.g. `220 ...` on "
         "465: clients expect implicit TLS there (RFC 8314); the summary names the MTA setting "
         "(exim tls_on_connect_ports, postfix smtps with smtpd_tls_wrappermode=yes)."),
    Code("tls.self_signed", "ports", "info",
         "The certificate on 465/993 is self-signed (reported, not failed).", role="note"),
    Code("tls.expired", "ports", "warning", "The certificate on 465/993 has expired."),
    Code("outbound.filtered", "outbound", "warning",
         "Connections from the host to every outbound target on the port time out (`nc -vz`): "
         "something drops them; the conclusion says whether the host firewall or something outside "
         "the host (error for port 25).", role="symptom"),
    Code("outbound.rejected", "outbound", "warning",
         "Connections from the host to every outbound target on the port got an ICMP reject "
         "(`No route to host` / `Network is unreachable` although the host has a route): the host's "
         "own firewall or a router on the way (error for port 25).", role="symptom"),
    Code("outbound.refused", "outbound", "warning",
         "Connections from the host to every outbound target on the port were refused (TCP RST): "
         "the targets, or something on the way, answered; not a drop.", role="symptom"),
    Code("outbound.no_route", "outbound", "warning",
         "The host has no route to the outbound targets (`ip route get`): its own network "
         "configuration, not a block (error for port 25)."),
    Code("outbound.unresolved", "outbound", "warning",
         "An outbound target (MAILCHECK_OUTBOUND_TARGETS) could not be resolved from where "
         "mailcheck runs: it was not tested.", role="note"),
    Code("outbound.untested", "outbound", "warning",
         "Outbound mail could not be tested: nc is missing on the host.", role="note"),
    Code("dns.resolver_silent", "resolver", "warning",
         "A nameserver of the host does not answer within 2 s: lookups wait on it (resolv.conf's "
         "timeout x attempts); with none answering, outbound mail cannot find MX hosts and each "
         "inbound greeting waits on the client's reverse lookup (error when none answers)."),
    Code("dns.resolver_refusing", "resolver", "warning",
         "A nameserver of the host answers REFUSED: outbound mail cannot find MX hosts through it "
         "(error when none answers)."),
    Code("dns.resolver_failing", "resolver", "warning",
         "A nameserver of the host answers SERVFAIL: it cannot resolve (error when none answers)."),
    Code("dns.resolver_unreachable", "resolver", "warning",
         "Nothing answers DNS at a nameserver of the host (connection refused, no route): lookups "
         "through it fail at once (error when none answers)."),
    Code("dns.resolver_slow", "resolver", "warning",
         "A nameserver of the host answers after 1 s or more, or not to every question (e.g. the "
         "prober's PTR): each such lookup, and greeting, waits for it."),
    Code("dns.resolver_not_recursive", "resolver", "warning",
         "A nameserver of the host answers without recursion (no `ra` flag): it cannot look up "
         "other domains' MX hosts."),
    Code("dns.resolver_none", "resolver", "warning",
         "/etc/resolv.conf names no nameserver: the resolver library asks 127.0.0.1."),
    Code("vantage.disagrees", "vantage", "warning",
         "A vantage point (inventory `vantage: true`) and mailcheck got different answers on a port "
         "(e.g. open from the vantage point, filtered from mailcheck): the summary names both views, "
         "with their source addresses. A block on one path only (guide step 5, outside the host), or "
         "a host firewall rule for one source alone.", role="symptom"),
    Code("vantage.failed", "vantage", "warning",
         "A vantage point could not probe (SSH failed, the probe's output unreadable): its view "
         "is missing.", role="note"),
    Code("dns.resolver_unknown", "resolver", "warning",
         "The host's resolver could not be tested (resolv.conf unreadable, dig missing).", role="note"),
    Code("dns.resolver_delays_greeting", "resolver", "warning",
         "A slow SMTP greeting (port.slow_greeting, silence first) is the host's resolver: it "
         "does not answer (or answers slowly) the reverse lookup of the prober's address."),
    Code("dns.resolver_not_greeting_cause", "resolver", "info",
         "The host's resolver answers the prober's reverse lookup at once: a slow greeting is not "
         "that lookup (a tarpit is more likely).", role="note"),
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
         "were too many to list.", role="note"),
    Code("firewall.unknown", "firewall", "warning",
         "The evaluator cannot tell what the firewall does to these ports.", role="note"),
    Code("firewall.fix_not_planned", "firewall", "info",
         "A block has no automatic fix (a ban, a source-limited rule, a case the planner refuses).", role="note"),
    Code("firewall.input_bypassed", "firewall", "warning",
         "A port published by a container (DNAT, decided in FORWARD) has INPUT rules (ufw's, raw "
         "iptables) meant to block it: they do not apply to it.", role="note"),
    Code("firewall.manager", "firewall", "info",
         "A firewall manager (CSF) builds the rules from its configuration: its settings decide the "
         "ports, and a raw rule is undone at its next restart (warning in CSF's TESTING mode).", role="note"),
    Code("firewall.ipv6_unfiltered", "firewall", "warning",
         "The firewall manager leaves IPv6 unfiltered (CSF's IPV6 = \"0\").", role="note"),
    Code("firewall.engine_rules_flushed", "firewall", "warning",
         "A restart of the firewall manager (csf -r) flushes the container engine's chains: published "
         "ports are no longer forwarded to the containers until the engine restarts.", role="note"),
    Code("provider.port_blocked", "conclusion", "error",
         "Firewall allows, a daemon listens publicly, yet the outside probe is filtered; or a "
         "router on the path (not the host) rejected the probe: the provider's network blocks "
         "the port (guide step 5)."),
    Code("provider.outbound_blocked", "conclusion", "error",
         "The host firewall allows an outbound mail port, yet connections to every target time out "
         "or are rejected on the way: blocked outside the host (guide step 5), with the provider's "
         "documented policy when the provider is known (error for 25, warning for 465/587)."),
    Code("provider.identified", "provider", "info",
         "Who hosts the server (cloud metadata from the host, the address's owner by RDAP/whois), "
         "and that provider's documented port-25/465 policy and how to lift it, with its source.", role="note"),
    Code("provider.unknown", "provider", "info",
         "No cloud metadata answered and the address's owner is unknown or not a provider "
         "mailcheck knows.", role="note"),
    Code("dns.no_domain", "dns", "warning",
         "No mail domain to check: none named (inventory `domain:`, `--domain`) and the MTA's "
         "configuration names none (or could not be read).", role="note"),
    Code("dns.lookup_failed", "dns", "warning",
         "A DNS lookup failed (timeout, SERVFAIL, refused): that part cannot be told, and no "
         "verdict rests on it.", role="note"),
    Code("dns.mx_missing", "dns", "warning",
         "The domain has no MX record (senders fall back to its A/AAAA); an error when the "
         "domain does not exist."),
    Code("dns.mx_invalid", "dns", "error",
         "An MX target is an alias (CNAME), an IP address or has no address, or a null MX is "
         "not alone (RFC 7505)."),
    Code("dns.null_mx", "dns", "info", "The domain publishes a null MX (RFC 7505): it receives no mail.", role="note"),
    Code("dns.mx_elsewhere", "dns", "info",
         "No MX host of the domain has this host's address: another host receives its mail.", role="note"),
    Code("dns.ptr_missing", "dns", "error", "A public address of the host has no PTR record."),
    Code("dns.fcrdns_failed", "dns", "error",
         "The PTR name does not resolve back to the address (forward-confirmed reverse DNS); "
         "the owner of the address block (RDAP) must change it."),
    Code("dns.ptr_mismatch", "dns", "warning",
         "The SMTP banner name or the MTA's HELO name is not the address's PTR name."),
    Code("dns.spf_missing", "dns", "warning", "The domain publishes no SPF record."),
    Code("dns.spf_invalid", "dns", "error",
         "More than one v=spf1 record, or a syntax error: receivers get permerror."),
    Code("dns.spf_plus_all", "dns", "error", "SPF ends in +all: every host may send for the domain."),
    Code("dns.spf_lookup_limit", "dns", "warning",
         "Some path through the SPF record needs more than RFC 7208's 10 DNS lookups (worst case)."),
    Code("dns.spf_split", "dns", "warning",
         "The SPF record is split over TXT strings so that a space is lost: it says something else."),
    Code("dns.spf_warning", "dns", "warning", "Another SPF problem (e.g. the ptr mechanism)."),
    Code("dns.spf_permerror", "dns", "error",
         "Evaluating SPF for this host's address ends in permerror (lookup or void-lookup limit "
         "as the RFC counts them, a broken include)."),
    Code("dns.spf_excludes_host", "dns", "error",
         "SPF does not let this host's address send for the domain (fail; softfail and neutral "
         "are warnings)."),
    Code("dns.dkim_unsigned", "dns", "warning",
         "No DKIM signer on the host (exim, opendkim, rspamd) signs mail from the domain."),
    Code("dns.dkim_missing", "dns", "error", "The selector the host signs with has no DKIM record."),
    Code("dns.dkim_invalid", "dns", "error",
         "The DKIM record does not parse, is not alone, or its key is revoked (empty p=)."),
    Code("dns.dkim_key_mismatch", "dns", "error",
         "The DKIM record's key is not the public half of the key the host signs with "
         "(fingerprints in evidence; the private key never leaves the host)."),
    Code("dns.dkim_key_unreadable", "dns", "warning",
         "The key file the signer names cannot be read on the host (missing, no openssl): "
         "the key cannot be compared, and a missing key means mail leaves unsigned."),
    Code("dns.dmarc_missing", "dns", "warning", "No DMARC record at the organisational domain."),
    Code("dns.dmarc_invalid", "dns", "error", "The DMARC record does not parse."),
    Code("dns.dmarc_rua_unauthorised", "dns", "warning",
         "A DMARC report address is in another domain that does not accept the reports "
         "(RFC 7489 7.1)."),
    Code("dns.dmarc_fails", "dns", "error",
         "Mail from the domain sent by this host fails DMARC (no aligned SPF or DKIM pass); "
         "a warning under p=none."),
    Code("dns.mta_sts_invalid", "dns", "error", "The MTA-STS TXT record or policy file is unusable."),
    Code("dns.mta_sts_mx_mismatch", "dns", "error",
         "An MX host matches no mx pattern of the MTA-STS policy (a warning in testing mode)."),
    Code("dns.tlsrpt_invalid", "dns", "warning", "The TLS-RPT record (_smtp._tls) is unusable."),
    Code("dns.dane_mismatch", "dns", "error",
         "No DNSSEC-validated TLSA record at _25._tcp.MX matches the certificate the host serves "
         "on port 25: DANE senders refuse to deliver."),
    Code("dns.dane_unchecked", "dns", "warning",
         "Validated TLSA records exist but cannot be matched: no port-25 certificate was read, "
         "or only DANE-TA (usage 2) records the leaf does not match (info for a domain checked "
         "alone).", role="note"),
    Code("dns.dane_insecure", "dns", "warning",
         "TLSA records exist but are not DNSSEC-validated (no AD bit): senders ignore them."),
    Code("dnsbl.listed", "reputation", "error",
         "A public address of the host is listed in a DNSBL (answer 127.0.0.2-127.0.0.11), with "
         "its TXT reason."),
    Code("dnsbl.cannot_check", "reputation", "warning",
         "A DNSBL could not be asked (127.255.255.x: refused for this resolver; a resolver that "
         "rewrites NXDOMAIN or a dead zone caught by the RFC 5782 test entries; a failed lookup).", role="note"),
    Code("check.step_failed", "", "error",
         "A step could not run (SSH failure, timeout, missing commands, crash); "
         "its message names host and step."),
)}


def finding(code: str, summary: str, *, evidence: str = "", severity: Severity | None = None,
            fixes: list[str] | None = None, step: str | None = None,
            ports: list[PortKey] | None = None, records: list[str] | None = None,
            advice: str = "") -> Finding:
    """A Finding whose code must be in the catalogue (KeyError otherwise), with its role;
    `ports`: the mail ports it affects; `records`, `advice`: a change mailcheck does not
    make itself (zone-file lines, who makes it and how)."""
    entry = CATALOGUE[code]
    return Finding(code=code, severity=severity or entry.severity, summary=summary,
                   evidence=evidence, fixes=list(fixes or []), step=step or entry.step,
                   role=entry.role, ports=sorted(set(ports or [])), records=list(records or []),
                   advice=advice)


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
