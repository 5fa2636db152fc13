"""Pure readers for the resolver step: resolv.conf and `dig` output.

`dig +time=2 +tries=1 @NS NAME TYPE` (bind9-dnsutils 9.18, bind-utils on RHEL)
prints the reply's header (`status: NOERROR`, `flags: qr rd ra`) and `Query time:
N msec`, or `communications error to NS#53: timed out` / `connection refused`
and exits 9 when no reply came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bot.models import CommandResult
from bot.outbound import is_ip

DIG_WAIT = 2  # s dig waits for a reply (+time, one try)
SLOW_MS = 1000  # a reply later than this is slow: every lookup (and greeting) waits for it
GLIBC_TIMEOUT, GLIBC_ATTEMPTS, GLIBC_MAXNS = 5, 2, 3  # resolv.conf(5) defaults

Outcome = Literal["answer", "refused", "servfail", "silent", "unreachable", "error", "missing"]


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    timeout: int = GLIBC_TIMEOUT  # options timeout:N, s per try
    attempts: int = GLIBC_ATTEMPTS  # options attempts:N, rounds over the nameservers
    rotate: bool = False

    def wait(self, silent: int) -> int:
        """Seconds one lookup waits when its first `silent` nameservers never answer
        (glibc tries each in order, `attempts` rounds)."""
        used = min(len(self.nameservers), GLIBC_MAXNS) or 1
        if silent >= used:  # every one silent: each round waits on each
            return self.timeout * self.attempts * used
        return self.timeout * silent  # then the next one answers, in the first round


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf(5): nameserver lines (valid addresses only), the last search/domain line,
    options timeout/attempts/rotate."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    timeout, attempts, rotate = GLIBC_TIMEOUT, GLIBC_ATTEMPTS, False
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver" and is_ip(words[1]):
            servers.append(words[1])
        elif words and words[0] in ("search", "domain"):
            search = tuple(words[1:])
        elif words and words[0] == "options":
            for opt in words[1:]:
                key, _, value = opt.partition(":")
                if key == "timeout" and value.isdigit():
                    timeout = min(int(value), 30)
                elif key == "attempts" and value.isdigit():
                    attempts = min(int(value), 5)
                elif key == "rotate":
                    rotate = True
    return ResolvConf(tuple(dict.fromkeys(servers)), search, max(timeout, 1), max(attempts, 1), rotate)


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    rcode: str | None = None  # NOERROR, NXDOMAIN, REFUSED, SERVFAIL, ...
    ms: int | None = None  # dig's "Query time"
    recursion: bool | None = None  # the `ra` flag: the server resolves other domains
    text: str = ""  # one line for the evidence

    @property
    def slow(self) -> bool:
        return self.outcome == "silent" or (self.outcome == "answer" and (self.ms or 0) >= SLOW_MS)


def parse_dig(r: CommandResult | None) -> Answer:
    if r is None:
        return Answer("error", text="not run")
    if r.missing:
        return Answer("missing", text="dig is not installed")
    if r.timed_out:
        return Answer("silent", text="no reply (the command timed out)")
    out = r.stdout + r.stderr
    status = re.search(r"status: ([A-Z]+)", out)
    if status:
        rcode = status.group(1)
        flags = re.search(r";; flags:([^;]*);", out)
        ms = re.search(r"Query time: (\d+) msec", out)
        kind: Outcome = {"NOERROR": "answer", "NXDOMAIN": "answer", "REFUSED": "refused",
                         "SERVFAIL": "servfail"}.get(rcode, "error")
        millis = int(ms.group(1)) if ms else None
        return Answer(kind, rcode, millis, "ra" in flags.group(1).split() if flags else None,
                      f"{rcode} in {millis if millis is not None else '?'} ms")
    low = out.lower()
    if "connection refused" in low or "unreachable" in low:
        line = next((x for x in out.splitlines() if any(w in x.lower() for w in (
            "error", "failed", "refused", "unreachable"))), out.strip().splitlines()[0])
        return Answer("unreachable", text=line.lstrip("; ").strip()[:160])
    if "timed out" in low or "no servers could be reached" in low:
        return Answer("silent", text=f"no reply within {DIG_WAIT} s")
    return Answer("error", text=(out.strip().splitlines() or ["no output"])[-1][:120])


NameserverState = Literal["answering", "slow", "silent", "refusing", "failing", "unreachable",
                          "untested"]


def classify(answers: list[Answer]) -> NameserverState:
    """One nameserver from its answers to the questions."""
    outs = [a.outcome for a in answers]
    if not outs or all(o in ("missing", "error") for o in outs):
        return "untested"
    if all(o == "silent" for o in outs):
        return "silent"
    if all(o == "unreachable" for o in outs):
        return "unreachable"
    if "answer" in outs:
        return "slow" if any(a.slow for a in answers) else "answering"
    if "refused" in outs and not {"servfail", "silent"} & set(outs):
        return "refusing"
    return "silent" if "silent" in outs else "failing"
