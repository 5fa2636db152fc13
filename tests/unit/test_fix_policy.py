"""Who may approve: host / inventory group / tag / Slack user group, four eyes, read-only, break-glass."""

from __future__ import annotations

import pytest

from bot.fixes.policy import Policy
from bot.models import Actor
from tests.unit.fixtures_fixes import inventory, settings


def policy(tmp_path, members=None, **kw) -> Policy:
    async def group_members(group: str) -> list[str]:
        return (members or {}).get(group, [])

    return Policy(settings(tmp_path, **kw), inventory(), group_members)


@pytest.mark.parametrize("host,actor,allowed", [
    ("mx1", "UHOST", True),      # the host's own approvers
    ("mx1", "UGROUP", True),     # rule by inventory group "mail"
    ("mx2", "UGROUP", True),
    ("mx2", "UEU", True),        # rule by tag "eu"
    ("mx1", "UEU", False),
    ("mx3", "UMX3", True),       # rule by host name
    ("mx3", "UGROUP", False),    # mx3 is not in group "mail"
    ("mx3", "UHOST", False),
    ("mx1", "UNOBODY", False),
])
async def test_approvers_by_host_group_tag(tmp_path, host, actor, allowed):
    p = policy(tmp_path)
    d = await p.decide(p.inventory.get(host), Actor("slack", actor), requested_by=Actor("slack", "UREQ"))
    assert d.allowed is allowed
    if not allowed:
        assert d.code == "not_approver" and "may not approve" in d.reason


async def test_usergroup_membership_is_resolved_by_the_injected_callable(tmp_path):
    p = policy(tmp_path, members={"SPRODOPS": ["UOPS1"], "SHOSTGRP": ["UOPS2"]})
    mx1, mx2 = p.inventory.get("mx1"), p.inventory.get("mx2")
    assert (await p.decide(mx1, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))).allowed    # tag prod -> SPRODOPS
    assert (await p.decide(mx1, Actor("slack", "UOPS2"), Actor("slack", "UREQ"))).allowed    # host's approver_groups
    assert not (await p.decide(mx2, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))).allowed  # mx2 is not prod
    # groups the caller already knows (e.g. from the Slack payload) count too
    assert (await p.decide(mx1, Actor("slack", "UX"), Actor("slack", "UREQ"), actor_groups=["SPRODOPS"])).allowed
    assert "SPRODOPS" in p.approvers_for(mx1).usergroups
    refused = await p.decide(mx2, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))
    assert refused.code == "not_approver" and refused.approvers == p.approvers_for(mx2)
    assert "<" not in refused.reason  # plain data: no Slack markup from the policy


async def test_four_eyes_refuses_the_requester_only(tmp_path):
    p = policy(tmp_path, four_eyes=True)
    mx1 = p.inventory.get("mx1")
    d = await p.decide(mx1, Actor("slack", "UHOST"), requested_by=Actor("slack", "UHOST"))
    assert not d.allowed and d.code == "four_eyes"
    assert (await p.decide(mx1, Actor("slack", "UGROUP"), requested_by=Actor("slack", "UHOST"))).allowed
    off = policy(tmp_path, four_eyes=False)
    assert (await off.decide(mx1, Actor("slack", "UHOST"), requested_by=Actor("slack", "UHOST"))).allowed


async def test_read_only_refuses_everyone_even_cli_and_break_glass(tmp_path):
    p = policy(tmp_path, read_only=True, break_glass=True)
    mx1 = p.inventory.get("mx1")
    for actor, reason in ((Actor("slack", "UHOST"), None), (Actor("cli", "root"), None),
                          (Actor("slack", "UX"), "the approvers are all asleep")):
        d = await p.decide(mx1, actor, Actor("slack", "UREQ"), break_glass_reason=reason)
        assert not d.allowed and d.code == "read_only" and "read-only" in d.reason


async def test_break_glass_off_by_default_and_needs_a_typed_reason(tmp_path):
    mx1 = inventory().get("mx1")
    off = policy(tmp_path)
    assert (await off.decide(mx1, Actor("slack", "UX"), Actor("slack", "UREQ"), break_glass_reason="x" * 40)).code == "break_glass_off"
    on = policy(tmp_path, break_glass=True)
    assert (await on.decide(mx1, Actor("slack", "UX"), Actor("slack", "UREQ"), break_glass_reason="  ")).code == "break_glass_reason"
    d = await on.decide(mx1, Actor("slack", "UX"), Actor("slack", "UREQ"), break_glass_reason="outage, no approver reachable")
    assert d.allowed and d.break_glass and "outage" in d.reason
    # without a reason, break-glass being on changes nothing
    assert not (await on.decide(mx1, Actor("slack", "UX"), Actor("slack", "UREQ"))).allowed


async def test_cli_operator_is_allowed_but_audited_as_such(tmp_path):
    p = policy(tmp_path)
    d = await p.decide(p.inventory.get("mx3"), Actor("cli", "alice"), Actor("cli", "alice"))
    assert d.allowed and d.code == "cli"


async def test_trust_follows_the_actors_kind_never_the_text_of_its_id(tmp_path):
    """A Slack user whose id reads like a terminal login is still a Slack user."""
    p = policy(tmp_path)
    mx3 = p.inventory.get("mx3")
    d = await p.decide(mx3, Actor("slack", "cli:alice"), Actor("slack", "UREQ"))
    assert not d.allowed and d.code == "not_approver"
    assert str(Actor("cli", "alice")) == "cli:alice" and str(Actor("slack", "UHOST")) == "UHOST"


async def test_a_failing_group_lookup_refuses_saying_why_and_memberships_are_cached(tmp_path):
    calls: list[str] = []
    answers = iter([RuntimeError("ratelimited"), ["UOPS1"]])

    async def group_members(group: str) -> list[str]:
        calls.append(group)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    p = Policy(settings(tmp_path), inventory(), group_members)
    mx1 = p.inventory.get("mx1")
    d = await p.decide(mx1, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))
    assert not d.allowed and d.code == "group_lookup_failed" and "ratelimited" in d.reason
    assert (await p.decide(mx1, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))).allowed
    assert (await p.decide(mx1, Actor("slack", "UOPS1"), Actor("slack", "UREQ"))).allowed
    assert calls.count("SHOSTGRP") + calls.count("SPRODOPS") == 2  # the success is cached


async def test_four_eyes_counts_everyone_who_requested_the_same_plan(tmp_path):
    p = policy(tmp_path, four_eyes=True)
    mx1 = p.inventory.get("mx1")
    requesters = {Actor("slack", "UREQ"), Actor("slack", "UHOST")}  # UHOST pressed Re-check
    d = await p.decide(mx1, Actor("slack", "UHOST"), requesters)
    assert not d.allowed and d.code == "four_eyes" and "Re-check" in d.reason
    assert (await p.decide(mx1, Actor("slack", "UGROUP"), requesters)).allowed
