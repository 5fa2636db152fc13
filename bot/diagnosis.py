"""Causes and symptoms: a pure correlation over a report's findings.

A step knows only its own findings; the report knows them all. Each finding says which
mail ports it affects (`ports`, PortKeys) and its role (`role`, or its code's role in the
catalogue; a code the catalogue does not know is a cause):

- a **cause**: something that stops or degrades mail — a firewall rule, a daemon that is
  down, the provider's network, a DNS record;
- a **symptom**: what is seen from outside — a port filtered, refused;
- a **note**: neither — tools missing, a self-signed certificate, "cannot tell".

`correlate` gives every finding an id (its step and its place in the step's list) and every
symptom its `caused_by`: the ids of the causes that affect one of its ports. Nothing here
knows a code by name, so a new step's findings fit as they are: declare the ports and, for
a symptom or a note, the role.

`verdict_causes` is what the report's verdict lists: the causes of severity warning or
worse, and each symptom that no cause explains (it stands for a cause not found), worst
first, then in the report's (the guide's) order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.checks.catalogue import role_of
from bot.models import Finding, Fix, PortKey, Report

RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def with_ids(step: str, findings: Sequence[Finding]) -> list[Finding]:
    """The step's findings, each with an id ('firewall#1') unless it has one, and its role."""
    return [f.model_copy(update={"id": f.id or f"{step or f.step or 'finding'}#{i}",
                                 "role": f.role or role_of(f.code)})
            for i, f in enumerate(findings, 1)]


def correlate(findings: Sequence[Finding]) -> list[Finding]:
    """Every symptom caused_by the causes that share one of its ports (roles filled in)."""
    found = [f if f.role else f.model_copy(update={"role": role_of(f.code)}) for f in findings]
    causes = [f for f in found if f.role == "cause" and f.ports]
    out = []
    for f in found:
        if f.role == "symptom":
            mine = set(f.ports)
            f = f.model_copy(update={"caused_by": [c.id for c in causes if mine & set(c.ports)]})
        out.append(f)
    return out


def verdict_causes(findings: Sequence[Finding]) -> list[Finding]:
    """The causes the verdict lists (see the module's docstring), worst first."""
    ids = {f.id for f in findings}
    listed = [f for f in findings if RANK[f.severity] <= RANK["warning"] and (
        f.role == "cause" or (f.role == "symptom" and not (set(f.caused_by) & ids)))]
    return sorted(listed, key=lambda f: RANK[f.severity])  # stable: report order within a rank


def diagnose(report: Report) -> Report:
    """The report with ids, roles, caused_by and its verdict's causes filled in (idempotent)."""
    findings = correlate(_ided(report.findings))
    return report.model_copy(update={
        "findings": findings, "causes": [f.id for f in verdict_causes(findings)]})


def _ided(findings: Sequence[Finding]) -> list[Finding]:
    if all(f.id for f in findings):
        return list(findings)
    out, seen = [], {}
    for f in findings:
        n = seen[f.step] = seen.get(f.step, 0) + 1
        out.append(f if f.id else f.model_copy(update={"id": f"{f.step or 'finding'}#{n}"}))
    return out


# --- what the renderers show: the causes with their fixes, in one order ---------------------
@dataclass(frozen=True)
class Item:
    """One line group of the answer: causes that one fix (or no fix) addresses."""

    causes: tuple[Finding, ...]
    fix: Fix | None = None


@dataclass(frozen=True)
class Answer:
    """The answer first: the verdict's causes grouped by their fix, then the rest."""

    items: tuple[Item, ...]
    symptoms: tuple[Finding, ...]  # explained by a cause
    notes: tuple[Finding, ...]  # notes, and causes below warning
    other_fixes: tuple[Fix, ...]  # fixes no listed cause names

    @property
    def causes(self) -> list[Finding]:
        return [c for item in self.items for c in item.causes]


def answer(report: Report) -> Answer:
    """The report's causes, each group beside the fix that addresses it, in verdict order.

    A fix sits beside the first cause that names it; later causes that name the same fix
    join that group (one button does both).
    """
    report = diagnose(report)
    by_id = {f.id: f for f in report.findings}
    fixes = {f.id: f for f in report.fixes}
    listed = [by_id[i] for i in report.causes if i in by_id]
    groups: dict[str, list[Finding]] = {}
    order: list[tuple[str | None, list[Finding]]] = []
    for cause in listed:
        fix_id = next((x for x in cause.fixes if x in fixes), None)
        if fix_id is None:
            order.append((None, [cause]))
        elif fix_id in groups:
            groups[fix_id].append(cause)
        else:
            groups[fix_id] = [cause]
            order.append((fix_id, groups[fix_id]))
    items = tuple(Item(tuple(cs), fixes.get(fid) if fid else None) for fid, cs in order)
    shown = {id(f) for f in listed}
    used = {item.fix.id for item in items if item.fix}
    return Answer(
        items=items,
        symptoms=tuple(f for f in report.findings if f.role == "symptom" and id(f) not in shown),
        notes=tuple(f for f in report.findings if f.role != "symptom" and id(f) not in shown),
        other_fixes=tuple(f for f in report.fixes if f.id not in used))


# --- effect on mail, in words -----------------------------------------------------------------
FAMILY = {"ipv4": "IPv4", "ipv6": "IPv6"}
ARROW = {"inbound": "in", "outbound": "out"}


def effect(ports: Iterable[PortKey]) -> str:
    """'in 25,143,465,587,993 (IPv4) · out 25,465,587 (IPv4)' — ports of one direction and
    the same families are listed once: 'in 25,587 (IPv4, IPv6)'."""
    keys = sorted(set(ports), key=lambda k: (k.direction, k.port, k.family))
    parts = []
    for direction in ("inbound", "outbound"):
        fams: dict[int, list[str]] = {}
        for k in keys:
            if k.direction == direction:
                fams.setdefault(k.port, []).append(FAMILY[k.family])
        by_families: dict[tuple[str, ...], list[int]] = {}
        for port in sorted(fams):
            by_families.setdefault(tuple(sorted(set(fams[port]))), []).append(port)
        for families, nums in by_families.items():
            parts.append(f"{ARROW[direction]} {','.join(map(str, nums))} ({', '.join(families)})")
    return " · ".join(parts)

