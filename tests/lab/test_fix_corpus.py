"""The firewall issue's rulesets: the planner's fixes applied through FixService.

Same cases as test_firewall_fix.py (which runs the commands with plain
`ip netns exec`); here every fix goes the way a Slack button sends it:
registered as a plan, approved, preconditions re-checked over real SSH,
backed up, guarded by the dead-man job, applied, verified by real probes,
and finally rolled back from the backup to the exact rules.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.models import Actor, Fix, PortStatus, Report
from config.inventory import Host
from tests.firewall_corpus import (
    addresses_of,
    kernel_outcomes,
    key,
    outcome_verdict,
    plan_fixes,
    run_case,
)
from tests.lab.test_firewall_fix import CASES, _rules
from tests.lab.test_fix_apply import service, ssh_ok

pytestmark = pytest.mark.lab


def kernel_verifier(lh):
    async def verify(host: Host, fix: Fix) -> list[PortStatus]:
        seen = await asyncio.to_thread(kernel_outcomes, lh)
        return [PortStatus(port=p, direction=d, family=f,
                           outside="open" if outcome_verdict(seen[key(d, f, p)]) == "allow"
                           else "filtered")
                for d, f, p in fix.expected_allow]

    return verify


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_planned_fix_through_the_approval_path(lab, tmp_path, case):
    lh = lab()
    _, results = await asyncio.to_thread(run_case, lh, case)
    _, plan = plan_fixes({r.command.argv: r for r in results}, addresses_of(lh))
    if case.no_fix:  # the case says why nothing may be planned: check that nothing is
        assert not plan.fixes, f"{case.name}: expected no fix ({case.no_fix})"
        return
    assert plan.fixes, "blocked ports but no fix: " + "; ".join(plan.notes)
    svc, host = service(tmp_path, lh)
    svc.verifier = kernel_verifier(lh)
    if not await ssh_ok(host, svc.settings):
        pytest.skip("the case's ruleset keeps mailcheck's SSH out: nothing can be applied")
    before = _rules(lh)
    report = Report(host=host.name, address=host.address, fixes=plan.fixes)
    plans = await svc.register(report, requested_by=Actor("slack", "UREQ"), channel="CLAB")
    changes = []
    for fix in plan.fixes:
        out = await svc.apply(plans[fix.id], Actor("slack", "UOPS"))
        assert out.status == "applied", (fix.id, out.status, out.message, out.log[-3:])
        assert out.verify is not None and out.verify.achieved, (fix.id, out.verify)
        changes.append(out.change_id)
    assert await ssh_ok(host, svc.settings)
    for change_id in reversed(changes):
        rb = await svc.rollback(change_id, Actor("slack", "UOPS"))
        assert rb.status == "rolled_back", rb.message
    assert _rules(lh) == before, "the rollback did not restore the exact rules"
    assert await ssh_ok(host, svc.settings)
