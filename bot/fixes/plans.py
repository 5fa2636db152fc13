"""Server-side plans: a report's fixes, each under an opaque random id.

A button carries only the plan id. A plan expires (settings.plan_ttl) and is
applied at most once: `Store.claim_plan` is one atomic transaction. The
approval binds to `plan_digest`, a sha256 over the host, the exact commands
and the evidence (preconditions, findings); if the stored plan no longer
hashes to the digest it was registered with, or the caller presents a
different digest, the plan is void.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from bot.models import Fix, PortStatus, Report
from bot.store import PlanRecord, Store
from config.inventory import Host


def plan_digest(host: Host, fix: Fix) -> str:
    """sha256 over what an approver approves: where, what runs, and on what evidence."""
    content = {
        "host": [host.name, host.address, host.port, host.user],
        "kind": fix.kind,
        "backend": fix.backend,
        "commands": fix.commands,
        "persist": fix.persist,
        "rollback": fix.rollback,
        "preconditions": [p.model_dump(mode="json") for p in fix.preconditions],
        "expected_allow": [list(e) for e in fix.expected_allow],
        "findings": fix.findings,
        "backup": fix.backup.model_dump(mode="json") if fix.backup is not None else None,
        "timeout": fix.timeout,
        "env": fix.env,
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def new_plan_id() -> str:
    """Opaque and unguessable (128 bits)."""
    return "p_" + secrets.token_urlsafe(16)


def _before_ports(report: Report, fix: Fix) -> list[PortStatus]:
    wanted = set(fix.expected_allow)
    return [p for p in report.ports if p.key in wanted]


class PlanBook:
    """Registers and looks up plans in the store."""

    def __init__(self, store: Store, ttl: float = 900) -> None:
        self.store = store
        self.ttl = ttl

    async def register(
        self, host: Host, report: Report, requested_by: str, channel: str = ""
    ) -> dict[str, PlanRecord]:
        """One plan per fix of the report; returns fix id -> plan."""
        now = time.time()
        out: dict[str, PlanRecord] = {}
        for fix in report.fixes:
            plan = PlanRecord(
                id=new_plan_id(), host=host, fix=fix, digest=plan_digest(host, fix),
                requested_by=requested_by, channel=channel, created_at=now,
                expires_at=now + self.ttl, before_ports=_before_ports(report, fix),
            )
            await self.store.add_plan(plan)
            out[fix.id] = plan
        return out

    async def get(self, plan_id: str) -> PlanRecord | None:
        return await self.store.get_plan(plan_id)


def digest_problem(plan: PlanRecord, presented: str | None) -> str | None:
    """Why the approval does not bind to this plan's content (None when it does)."""
    actual = plan_digest(plan.host, plan.fix)
    if actual != plan.digest:
        return "the stored plan changed after it was shown; it is void, run the check again"
    if presented is not None and presented != plan.digest:
        return "the plan you approved is not the plan on record; run the check again"
    return None
