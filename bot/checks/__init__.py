"""The guide's steps as pure checks: declared commands in, findings out.

Each step module exposes `NAME`, `commands() -> list[Command]`, `NEEDS` (the
steps whose outcome it reads) and `evaluate(inp: CheckInput) -> StepOutcome`.
`evaluate` never does I/O: it reads captured CommandResults (keyed by argv
tuple), the outside probes and the outcomes of earlier steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from bot.checks.facts import HostFacts
from bot.models import CommandResult, Direction, Family, Finding, Fix, PortStatus, StepStatus
from bot.probes import ProbeReport

Results = Mapping[tuple[str, ...], CommandResult]
PortKey = tuple[Direction, Family, int]


@dataclass(frozen=True)
class CheckInput:
    host_name: str
    address: str
    results: Results
    facts: HostFacts
    addresses: Mapping[str, str] = field(default_factory=dict)  # family -> the address probed
    probes: ProbeReport | None = None
    ports: Mapping[PortKey, PortStatus] = field(default_factory=dict)
    prior: Mapping[str, StepOutcome] = field(default_factory=dict)
    outbound_target: str | None = None  # an outside address the host connects to (optional test)


@dataclass
class StepOutcome:
    status: StepStatus
    summary: str
    evidence: str = ""
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    ports: dict[PortKey, dict[str, Any]] = field(default_factory=dict)  # PortStatus field updates
    data: dict[str, Any] = field(default_factory=dict)  # read by later steps
    error: str | None = None


def status_of(findings: list[Finding]) -> StepStatus:
    if any(f.severity in ("error", "critical") for f in findings):
        return "fail"
    if any(f.severity == "warning" for f in findings):
        return "warn"
    return "ok"


def all_checks() -> list[ModuleType]:
    """The step modules in the guide's order."""
    from bot.checks import conclusion, firewall, ports, services, tools

    return [tools, services, ports, firewall, conclusion]
