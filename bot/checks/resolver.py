"""The host's own resolver: does it answer, and what does it break when it does not?

Reads /etc/resolv.conf, and systemd-resolved's upstreams (/run/systemd/resolve/
resolv.conf) where it runs (in the facts round trip, bot.checks.facts, so the questions
go out in the main one); then asks each nameserver, from the host, with a short
timeout (`dig +time=2 +tries=1 @NS`), three questions: the host's own name (A), an
MX record (its domain), and the PTR of the prober's address, which is
what an MTA looks up before it greets a client. (The host's name is `uname -n`.) Each nameserver is answering, slow,
silent, refusing, failing (SERVFAIL) or unreachable (nothing listens).

What it breaks, said plainly: with no nameserver answering, outbound mail cannot
find MX hosts; a silent nameserver makes every lookup wait (resolv.conf's timeout ×
attempts), and each inbound greeting waits on the reverse lookup of the client. A
slow greeting the ports step saw is tied to it, or ruled out when the prober's PTR
is answered at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.checks.base import Check, CheckContext, CheckInput, Results, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.dig import (
    DIG_WAIT,
    Answer,
    NameserverState,
    ResolvConf,
    classify,
    parse_dig,
    parse_resolv_conf,
)
from bot.checks.facts import RESOLV, RESOLVED, UNAME
from bot.models import Command, Finding, PortStatus

MAX_NAMESERVERS = 6
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
BROKEN = ("silent", "refusing", "failing", "unreachable")


@dataclass(frozen=True)
class Question:
    name: str
    rdtype: str  # A | MX | PTR
    why: str

    def argv(self, nameserver: str) -> tuple[str, ...]:
        ask = ("-x", self.name) if self.rdtype == "PTR" else (self.name, self.rdtype)
        return ("dig", f"+time={DIG_WAIT}", "+tries=1", f"@{nameserver}", *ask)


@dataclass(frozen=True)
class Plan:
    conf: ResolvConf | None  # None: /etc/resolv.conf could not be read
    upstreams: tuple[str, ...]  # systemd-resolved's, not already in resolv.conf
    questions: tuple[Question, ...]

    @property
    def nameservers(self) -> tuple[str, ...]:
        """What glibc asks (127.0.0.1 when resolv.conf names none), then resolved's upstreams."""
        if self.conf is None:
            return ()
        return ((self.conf.nameservers or ("127.0.0.1",)) + self.upstreams)[:MAX_NAMESERVERS]

    def role(self, nameserver: str) -> str:
        if self.conf is not None and nameserver in self.conf.nameservers:
            return f"resolv.conf #{self.conf.nameservers.index(nameserver) + 1}"
        return "systemd-resolved upstream" if nameserver in self.upstreams else "implicit (none named)"


def plan(results: Results, sources) -> Plan:
    conf_r, up_r = results.get(RESOLV), results.get(RESOLVED)
    conf = parse_resolv_conf(conf_r.stdout) if conf_r is not None and conf_r.ok else None
    upstreams = parse_resolv_conf(up_r.stdout).nameservers if up_r is not None and up_r.ok else ()
    if conf is None:
        return Plan(None, (), ())
    name, domain = names(results, conf)
    questions = [Question(name, "A", "the host's own name"), Question(domain, "MX", "an MX record")]
    prober = sources.get("ipv4") or sources.get("ipv6")
    if prober:
        questions.append(Question(prober, "PTR", "the prober's address, as an MTA looks up each client"))
    return Plan(conf, tuple(u for u in upstreams if u not in conf.nameservers), tuple(questions))


def names(results: Results, conf: ResolvConf) -> tuple[str, str]:
    """(the host's own name, its domain for the MX question): `uname -n`, qualified with the
    first search domain as the resolver would. Not the MTA's own names: `exim -bP` itself
    waits on a dead resolver (it qualifies its host name), which would hold this step back
    exactly when it matters."""
    uname = results.get(UNAME)
    node = uname.stdout.strip().rstrip(".") if uname is not None and uname.ok else ""
    name = node if node and HOSTNAME.match(node) else "localhost"
    if "." not in name and conf.search:
        name = f"{name}.{conf.search[0]}"
    labels = name.split(".")
    return name, ".".join(labels[1:]) if len(labels) > 2 else name


class Resolver(Check):
    name = "resolver"
    needs = ("ports",)  # to tie a slow greeting to it
    ssh = "required"
    own_batch = True  # dig waits on silent nameservers

    def commands(self, ctx: CheckContext) -> list[Command]:
        """dig at each nameserver the facts round trip's resolv.conf names."""
        p = plan(ctx.results, ctx.sources)
        return [Command(q.argv(ns), timeout=DIG_WAIT + 3) for ns in p.nameservers for q in p.questions]

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        p = plan(inp.results, inp.sources)
        if p.conf is None:
            r = inp.results.get(RESOLV)
            why = "not read" if r is None else (r.stderr.strip() or f"exit {r.exit_status}")[:160]
            f = finding("dns.resolver_unknown", f"The host's resolver could not be tested: /etc/resolv.conf "
                        f"could not be read ({why})", evidence=why)
            return StepOutcome("warn", "resolv.conf unreadable", why, [f])
        states = {ns: (classify(ans), ans) for ns in p.nameservers
                  if (ans := [parse_dig(inp.results.get(q.argv(ns))) for q in p.questions])}
        lines = [f"{ns} ({p.role(ns)}): {state} — " + "; ".join(
            f"{q.rdtype} {q.name} {a.text}" for q, a in zip(p.questions, ans, strict=True))
            for ns, (state, ans) in states.items()]
        findings = conf_findings(p) + state_findings(p, states) + greeting_findings(p, states, inp.ports)
        summary = ", ".join(f"{ns} {state}" for ns, (state, _a) in states.items()) or "no nameserver"
        return StepOutcome(status_of(findings), summary, "\n".join(lines), findings)


def conf_findings(p: Plan) -> list[Finding]:
    if p.conf.nameservers:
        return []
    return [finding("dns.resolver_none", "/etc/resolv.conf names no nameserver: the resolver library "
                    "asks 127.0.0.1 (tested below); if nothing answers there, no name resolves")]


def state_findings(p: Plan, states: dict[str, tuple[NameserverState, list[Answer]]]) -> list[Finding]:
    if any(state == "untested" for state, _a in states.values()):
        return [finding("dns.resolver_unknown", "The host's resolver could not be tested: dig is not "
                        "installed on the host (the tools step proposes it)")]
    glibc = [ns for ns in p.nameservers if ns not in p.upstreams]
    working = [ns for ns in glibc if states[ns][0] in ("answering", "slow")]
    out = []
    for ns, (state, answers) in states.items():
        if state in ("answering", "slow") and all(a.recursion is False for a in answers if a.outcome == "answer"):
            out.append(finding("dns.resolver_not_recursive", f"Nameserver {ns} answers but offers no "
                               "recursion (no 'ra' flag): it cannot look up other domains, so outbound "
                               "mail cannot find their MX hosts through it",
                               evidence=_evidence(p, answers)))
        if state not in (*BROKEN, "slow"):
            continue
        silent_before = glibc.index(ns) + 1 if ns in glibc else 0
        out.append(finding(f"dns.resolver_{state}", _broken(p, ns, state, working, silent_before),
                           evidence=_evidence(p, answers),
                           severity="error" if not working and ns in glibc else None))
    return out


def _broken(p: Plan, ns: str, state: str, working: list[str], position: int) -> str:
    what = {
        "silent": f"does not answer (no reply within {DIG_WAIT} s)",
        "refusing": "refuses the host's questions (REFUSED: an access list without this host, or "
                    "a server that does not resolve for others)",
        "failing": "answers SERVFAIL: it cannot resolve (its upstreams or DNSSEC fail)",
        "unreachable": "cannot be reached: nothing answers DNS there (connection refused or no route), "
                       "so lookups through it fail at once",
        "slow": "answers, but slowly or not to every question",
    }[state]
    head = f"Nameserver {ns} ({p.role(ns)}) {what}."
    if ns in p.upstreams:
        return head + " systemd-resolved forwards the host's lookups to it."
    if not working:
        wait = p.conf.wait(len([n for n in p.nameservers if n not in p.upstreams]))
        return head + (" No nameserver of the host answers: outbound mail cannot find MX hosts, and "
                       f"each lookup waits {wait} s before it fails, so each inbound SMTP greeting "
                       "waits that long on the reverse lookup of the client" if state == "silent" else
                       " No nameserver of the host answers: outbound mail cannot find MX hosts")
    glibc = [n for n in p.nameservers if n not in p.upstreams]
    if state in ("silent", "slow") and position and position <= glibc.index(working[0]):
        return head + (f" It comes before {working[0]}, which answers: every lookup first waits "
                       f"{p.conf.timeout} s on it (options timeout:{p.conf.timeout}), inbound "
                       "greetings included")
    return head + f" Lookups still succeed through {', '.join(working)}."


def _evidence(p: Plan, answers: list[Answer]) -> str:
    return "\n".join(f"dig {q.rdtype} {q.name} ({q.why}): {a.text}"
                     for q, a in zip(p.questions, answers, strict=True))


FAILS_AT_ONCE = ("unreachable", "refused", "servfail")  # glibc goes on to the next nameserver at once


def greeting_findings(p: Plan, states: dict, ports) -> list[Finding]:
    """Tie a silent-start slow greeting (ports step) to the prober's PTR lookup, or rule it out:
    the lookup as glibc makes it, nameserver by nameserver in resolv.conf's order, past those
    that fail at once (nothing listens, REFUSED, SERVFAIL) to the first that answers or waits."""
    slow = sorted((x for x in ports.values() if isinstance(x, PortStatus) and x.direction == "inbound"
                   and x.greeting_wait == "silence"), key=lambda x: (x.family, x.port))
    ptr = next((i for i, q in enumerate(p.questions) if q.rdtype == "PTR"), None)
    glibc = [ns for ns in p.nameservers if ns not in p.upstreams]
    if not slow or ptr is None or not glibc or any(ns not in states for ns in glibc):
        return []
    asked = [(ns, states[ns][1][ptr]) for ns in glibc]
    decides = next(((ns, a) for ns, a in asked if a.outcome not in FAILS_AT_ONCE), None)
    if p.conf.rotate:  # glibc starts each lookup at the next nameserver: a waiting one delays some
        decides = next(((ns, a) for ns, a in asked if a.slow), decides)
    if decides is not None and decides[1].outcome in ("error", "missing"):
        return []  # not known what this nameserver does: no claim either way
    which = ", ".join(f"{x.key.label} ({x.greeting_time:.1f} s)" for x in slow)
    greeting, verb = ("greetings", "are") if len(slow) > 1 else ("greeting", "is")
    prober = p.questions[ptr].name
    evidence = "\n".join(f"dig PTR {prober} @{ns}: {a.text}" for ns, a in asked)
    if decides is not None and decides[1].slow:
        ns, answer = decides
        return [finding("dns.resolver_delays_greeting",
                        f"The slow {greeting} on {which} {verb} the host's resolver: {ns} "
                        f"{'does not answer' if answer.outcome == 'silent' else 'answers slowly'} the "
                        f"reverse lookup of {prober} (the prober's address), and MTAs look up each "
                        "client before they greet it. Fix the resolver and the greetings come at once",
                        evidence=evidence)]
    said = (f"answers the reverse lookup of {prober} (the prober's address) at once "
            f"({decides[1].text} from {decides[0]})" if decides is not None else
            f"fails the reverse lookup of {prober} (the prober's address) at once (every nameserver "
            "refuses it or cannot be reached)")
    return [finding("dns.resolver_not_greeting_cause",
                    f"The host's resolver {said}: the slow {greeting} on {which} {verb} not that "
                    "lookup; a deliberate delay (a tarpit) is more likely", evidence=evidence)]
