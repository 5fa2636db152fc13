"""What came back to the outside probes, read for the ports step (pure).

- An ICMP reject: who sent it. The host itself (one of its addresses) means
  the host firewall; another address means a router on the path, the
  direct evidence for a block outside the host (guide step 5).
- A slow greeting (within the greeting budget, so never a failure): how long
  and the likely cause, from the shape of the wait: a Postfix postscreen
  pre-greeting (`220-` at once, the final `220 ` seconds later), lines
  trickling in (a tarpit), or silence before the first byte (the server
  resolving the client's address on a dead resolver, or a deliberate delay).
  Which of the last two it is needs the host's resolver: the port keeps the
  wait's shape (`greeting_wait`) and duration (`greeting_time`) for a later
  step to name it.
- Plain text on an implicit-TLS port (`220 ...` on 465): clients expect TLS
  from the first byte (RFC 8314); the finding names the MTA setting that
  fixes it; the port keeps the line (`plaintext`) for a config fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

from bot.checks.catalogue import finding
from bot.models import Finding, GreetingWait, IcmpAnswer, PortKey, PortStatus
from bot.probes import PortProbe

SLOW_GREETING = 3.0  # s: a greeting (or TLS answer) later than this is reported, with its cause
TRICKLE_GAP = 1.0  # s between every two greeting lines: a tarpit sending its banner slowly

TLS_ON_CONNECT = {  # the setting that makes an MTA speak TLS from the first byte on 465
    "exim": "exim: `tls_on_connect_ports = 465` in the main configuration section, with TLS "
            "enabled (Debian: MAIN_TLS_ENABLE, see README.Debian on TLS on connect)",
    "postfix": "postfix: the `smtps` service in master.cf, `smtps inet n - y - - smtpd "
               "-o smtpd_tls_wrappermode=yes`",
}


def _same(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def attribute(p: PortProbe, host_addresses: Collection[str] = ()) -> IcmpAnswer | None:
    """The probe's ICMP answer and who sent it: the host (the probed address or another of
    its addresses), mailcheck's own side (the probe's source address), or the path."""
    e = p.icmp
    if e is None:
        return None
    if e.sender is None:
        by = "unknown"
    elif _same(e.sender, p.source):
        by = "prober"
    elif _same(e.sender, p.address) or any(_same(e.sender, a) for a in host_addresses):
        by = "host"
    else:
        by = "path"
    return IcmpAnswer(type=e.type, code=e.code, name=e.name, sender=e.sender, by=by)


def reject_finding(p: PortProbe, answer: IcmpAnswer, label: str) -> Finding:
    """`port.rejected`, saying who rejected it."""
    ev = (f"TCP connect from {p.source or '?'} to {p.address}:{p.port}: rejected by "
          f"{p.icmp.describe() if p.icmp else answer.name}")
    summary = {
        "host": f"Port {label} is rejected by the host itself ({answer.sender}, ICMP {answer.name}): "
                "its firewall rejects it",
        "path": f"Port {label} is rejected before it reaches the host: {answer.sender}, a router on "
                f"the path from here (not the host), answered ICMP {answer.name}",
    }.get(answer.by, f"Port {label} is rejected (ICMP {answer.name}; the kernel did not say by whom)")
    return finding("port.rejected", summary, evidence=ev, severity="error" if p.port == 25 else None)


@dataclass(frozen=True)
class SlowGreeting:
    seconds: float  # connect -> the complete greeting (or the TLS answer)
    kind: GreetingWait
    cause: str  # the likely cause, in words


def slow_greeting(p: PortProbe) -> SlowGreeting | None:
    """A greeting that came, but late; None if it was quick or never came."""
    s, t = p.smtp, p.tls
    if s is not None and s.greeting_time is not None and s.greeting_time >= SLOW_GREETING:
        times, lines = s.line_times, s.greeting.split("\n")
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        if len(times) > 2 and min(gaps) >= TRICKLE_GAP:
            return SlowGreeting(s.greeting_time, "trickle", (
                f"the greeting's {len(times)} lines trickled in over {s.greeting_time:.1f} s: a tarpit "
                "(a deliberate delay against spam senders)"))
        if len(times) > 1 and lines[0].startswith("220-") and times[0] < SLOW_GREETING:
            return SlowGreeting(s.greeting_time, "pregreet", (
                f"a multi-line pre-greeting: '220-' after {times[0]:.1f} s, the final '220 ' after "
                f"{s.greeting_time:.1f} s. Postfix postscreen does this on purpose (its greet test "
                "waits postscreen_greet_wait, 6 s by default); real mail servers wait for it"))
        return SlowGreeting(s.greeting_time, "silence", _silence(times[0]))
    if t is not None and t.handshake_time is not None and t.handshake_time >= SLOW_GREETING \
            and (t.error is None or t.plaintext is not None):
        return SlowGreeting(t.handshake_time, "silence", _silence(t.handshake_time))
    return None


def _silence(first: float) -> str:
    return (f"the server sent nothing for {first:.1f} s after the connect. Servers wait like this "
            "while they look up the client's address (reverse DNS) on a resolver that does not "
            "answer, or on purpose (a tarpit: exim's `delay` in the connect ACL, sendmail's "
            "greet_pause); which of the two is not visible from outside")


def greeting_finding(p: PortProbe, label: str) -> Finding | None:
    slow = slow_greeting(p)
    if slow is None:
        return None
    what = "TLS answer" if p.tls is not None else "SMTP greeting"
    return finding("port.slow_greeting", f"Port {label}: the {what} took {slow.seconds:.1f} s: {slow.cause}",
                   evidence=_timeline(p), severity="warning" if slow.kind == "silence" else "info")


def _timeline(p: PortProbe) -> str:
    if p.smtp is not None:
        return "\n".join(f"+{t:.2f}s {line}" for t, line in
                         zip(p.smtp.line_times, p.smtp.greeting.split("\n"), strict=False))
    t = p.tls
    return f"+{t.handshake_time:.2f}s first answer to the TLS ClientHello" if t and t.handshake_time else ""


def plaintext_finding(p: PortProbe, label: str, status: PortStatus | None) -> Finding | None:
    """`tls.plaintext`: a line of text where a TLS ServerHello was expected."""
    line = p.tls.plaintext if p.tls is not None else None
    if line is None:
        return None
    if not (p.port == 465 and line.startswith("220")):
        return finding("tls.plaintext", f"Port {label} answers in plain text where TLS was expected: "
                       f"{line[:80]!r}", evidence=line)
    mta = _mta(status.process if status else None, line)
    fixes = [TLS_ON_CONNECT[mta]] if mta else list(TLS_ON_CONNECT.values())
    summary = (f"Port {label} speaks plain SMTP ({line[:60]!r}) where clients expect implicit TLS "
               f"(RFC 8314): clients set to SSL/TLS on 465 cannot send. The setting that fixes it: "
               + "; or ".join(fixes))
    return finding("tls.plaintext", summary, evidence=f"first line on {p.address}:{p.port}: {line}")


def _mta(process: str | None, banner: str) -> str | None:
    text = f"{process or ''} {banner}".lower()
    return next((m for m in TLS_ON_CONNECT if m in text), None)


def key(p: PortProbe) -> PortKey:
    return PortKey("inbound", p.family, p.port)
