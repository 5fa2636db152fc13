"""The guide's first case as the real engine reports it, without a host.

The firewall's output is the corpus case recorded on a lab host
(tests/data/firewall/guide_policy_accept_multiport_drop: INPUT rule 1 drops 22, rule 2 the
mail ports, OUTPUT rule 1 the mail ports, IPv4 only); `ss` shows exim4 and dovecot listening
on every address of both families, as in the guide's lsof samples; the outside probes find
what the kernel answered in that recording (expected.json: IPv4 filtered, IPv6 open). The
real Engine, checks, firewall analysis and planners turn that into the report, so tests of
the message, the terminal and the rendered picture read what a user would get. The case is
the guide's Part 1 (the firewall): its steps only, not Part 2's dns and reputation (they
would ask about this host's domains and addresses in DNS, which the recording has not).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

from bot.checks import all_checks, facts
from bot.checks.services import SS
from bot.engine import Engine
from bot.models import Command, CommandResult, Report
from bot.probes import PortProbe, ProbeReport
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.firewall_corpus import load_captured

CASE = Path(__file__).parent / "data" / "firewall" / "guide_policy_accept_multiport_drop"
ADDRESSES = json.loads((CASE / "expected.json").read_text())["addresses"]
HOST = Host(name="mx1", address=ADDRESSES["host"])
IP_ADDR = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    f"2: eth0    inet {ADDRESSES['host']}/30 scope global eth0\\       valid_lft forever\n"
    f"2: eth0    inet6 {ADDRESSES['host6']}/64 scope global nodad \\       valid_lft forever\n"
)
SS_OUT = "".join(
    f"LISTEN 0      20     {addr}:{port} {peer}:* users:((\"{proc}\",pid={pid},fd={fd}))\n"
    for port, proc, pid in ((25, "exim4", 839), (465, "exim4", 839), (587, "exim4", 839),
                            (143, "dovecot", 859), (993, "dovecot", 859))
    for (addr, peer), fd in ((("0.0.0.0", "0.0.0.0"), 4), (("[::]", "[::]"), 5)))
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'


class CapturedHost:
    """A Transport that answers with the recorded output (exit 0 and nothing for the rest)."""

    def __init__(self, extra: dict[tuple[str, ...], str] | None = None) -> None:
        self.name = HOST.name
        self.results = load_captured(CASE / "captured")
        self.text = {facts.IP_ADDR: IP_ADDR, facts.OS_RELEASE: OS_RELEASE, facts.PID1: "systemd\n",
                     SS: SS_OUT, **(extra or {})}

    async def run(self, commands: Sequence[Command], *, step: str = "") -> list[CommandResult]:
        out = []
        for c in commands:
            if c.argv in self.text:
                out.append(CommandResult(c, 0, self.text[c.argv], ""))
            elif c.argv in self.results:
                r = self.results[c.argv]
                out.append(CommandResult(c, r.exit_status, r.stdout, r.stderr))
            else:
                out.append(CommandResult(c, 0, "", ""))
        return out

    async def close(self) -> None:
        return None


class RecordedProber:
    """The kernel's recorded answers, after `delay` seconds (a filtered port waits its timeout)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.finished: list[float] = []  # time.monotonic() as each family's probes end
        outcomes = json.loads((CASE / "expected.json").read_text())["outcomes"]
        self.state = {k: v for k, v in outcomes.items() if k.startswith("inbound/")}

    async def probe(self, family, address, ports) -> ProbeReport:
        await asyncio.sleep(self.delay)
        self.finished.append(time.monotonic())
        source = ADDRESSES["prober6" if family == "ipv6" else "prober"]
        probes = [PortProbe(family, address, p, self.state[f"inbound/{family}/{p}"], source,
                            elapsed=self.delay, error="timed out" if "filtered" in
                            self.state[f"inbound/{family}/{p}"] else None) for p in ports]
        return ProbeReport(probes, {family: source})


def inventory() -> Inventory:
    return Inventory.model_validate({"hosts": {HOST.name: {"address": HOST.address}}})


PART1 = ("tools", "services", "ports", "outbound", "firewall", "provider", "conclusion")
# (outbound is off in tests unless they set targets; the provider is unknown: no metadata
# service answers in the recording, and the address's holder is not asked)


def engine(probe_delay: float = 0.0, extra: dict[tuple[str, ...], str] | None = None) -> Engine:
    """The real Engine on the recorded host, the guide's Part 1 steps; `engine.prober.finished`
    tells when probes ended."""
    settings = Settings(_env_file=None, inventory=None)
    return Engine(settings, inventory(), transport_factory=lambda h: CapturedHost(extra),
                  prober=RecordedProber(probe_delay),
                  checks=[c for c in all_checks() if c.name in PART1])


async def report(**kw) -> Report:
    """The guide's first case, checked by the real engine."""
    return await engine(**kw).check(HOST)
