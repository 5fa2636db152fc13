"""Helpers for the check unit tests: captured outputs -> CheckInput."""

from __future__ import annotations

from pathlib import Path

from bot.checks import CheckInput, StepOutcome
from bot.checks.facts import HostFacts, parse_ip_addr
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, Command, CommandResult, PortStatus
from bot.probes import ProbeReport

GUIDE = Path(__file__).parent / "data" / "guide"

LAB_IP_ADDR = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: eth0    inet 198.18.2.2/30 scope global eth0\\       valid_lft forever preferred_lft forever\n"
    "2: eth0    inet6 2001:2:0:2::2/64 scope global nodad \\       valid_lft forever\n"
    "2: eth0    inet6 fe80::3c3e:4fff:fe50:25e4/64 scope link \\       valid_lft forever\n"
)


def guide(name: str) -> str:
    return (GUIDE / name).read_text()


def result(argv: tuple[str, ...], stdout: str = "", exit_status: int | None = 0,
           stderr: str = "", timed_out: bool = False) -> CommandResult:
    return CommandResult(Command(argv), exit_status, stdout, stderr, timed_out)


def results(*items: CommandResult) -> dict[tuple[str, ...], CommandResult]:
    return {r.command.argv: r for r in items}


def facts(family: str = "debian", distro_id: str = "debian", systemd: bool | None = False,
          ip_addr: str = LAB_IP_ADDR) -> HostFacts:
    return HostFacts(distro_id, family, "", systemd, parse_ip_addr(ip_addr))


def base_ports(families=("ipv4", "ipv6")) -> dict:
    return {(d, f, p): PortStatus(port=p, direction=d, family=f)
            for f in families
            for d, ports in (("inbound", INBOUND_PORTS), ("outbound", OUTBOUND_PORTS))
            for p in ports}


def make_input(res=None, *, host_facts: HostFacts | None = None, probes: ProbeReport | None = None,
               ports=None, prior: dict[str, StepOutcome] | None = None,
               addresses=None) -> CheckInput:
    return CheckInput("mx1", "198.18.2.2", res or {}, host_facts or facts(),
                      addresses=addresses or {"ipv4": "198.18.2.2", "ipv6": "2001:2:0:2::2"},
                      probes=probes, ports=ports if ports is not None else base_ports(),
                      prior=prior or {}, sources=probes.sources if probes is not None else {})
