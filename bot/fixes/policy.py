"""Who may apply a fix, and when nobody may.

Approvers come from the inventory: a host's own `approvers` (Slack user IDs)
and `approver_groups` (Slack user group IDs), plus every `approvals` rule
that matches the host by name, inventory group or tag. Membership of a
Slack user group is resolved by an injected async callable (in production
Slack's usergroups.users.list), so the policy is testable without Slack.

Order of the checks: read-only first (nothing is applied during a freeze,
not even break-glass), then four eyes, then approver lists. Only when those
refuse, and only when settings.break_glass is on, a typed reason opens the
break-glass path (the caller announces it in the channel and audits it).

An Actor of kind "cli" is a person at a terminal holding the SSH key to the
host: approver lists do not apply to them (they could run the commands by
hand), the read-only switch does. Only the kind decides that, never the text
of an id: a Slack user id is always of kind "slack".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from bot.models import Actor
from config.inventory import Host, Inventory
from config.settings import Settings

GroupMembers = Callable[[str], Awaitable[Iterable[str]]]
MIN_REASON = 10


@dataclass(frozen=True)
class Approvers:
    """Who may approve: Slack user ids and user group ids (plain data; a renderer names them)."""

    users: frozenset[str]
    usergroups: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.users or self.usergroups)


@dataclass(frozen=True)
class Permission:
    """May this actor apply (or roll back) a fix, and why (not). `approvers`: who may, when
    the actor may not (not_approver)."""

    allowed: bool
    reason: str
    break_glass: bool = False
    code: str = ""  # read_only, four_eyes, not_approver, break_glass_reason, ...
    approvers: Approvers | None = None


async def _no_groups(_group: str) -> list[str]:
    return []


class Policy:
    def __init__(
        self, settings: Settings, inventory: Inventory, group_members: GroupMembers = _no_groups
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.group_members = group_members

    def approvers_for(self, host: Host) -> Approvers:
        users, groups = set(host.approvers), set(host.approver_groups)
        inv_groups = set(self.inventory.groups_of(host.name))
        for rule in self.inventory.approvals:
            if (host.name in rule.hosts or inv_groups & set(rule.groups)
                    or set(host.tags) & set(rule.tags)):
                users.update(rule.users)
                groups.update(rule.usergroups)
        return Approvers(frozenset(users), frozenset(groups))

    async def is_approver(
        self, host: Host, actor: Actor, actor_groups: Iterable[str] | None = None
    ) -> bool:
        """A Slack user named (or in a user group named) as an approver for `host`."""
        if actor.kind != "slack":
            return False
        who = self.approvers_for(host)
        if actor.id in who.users:
            return True
        if actor_groups is not None and who.usergroups & set(actor_groups):
            return True
        for group in sorted(who.usergroups):
            if actor.id in set(await self.group_members(group)):
                return True
        return False

    async def decide(
        self, host: Host, actor: Actor, requested_by: Actor | None, *,
        actor_groups: Iterable[str] | None = None, break_glass_reason: str | None = None,
    ) -> Permission:
        """May `actor` apply a fix on `host` that `requested_by` asked for?"""
        if self.settings.read_only:
            return Permission(False, "mailcheck is read-only (change freeze): fixes are not "
                            "applied; checks still run", code="read_only")
        if actor.kind == "cli":
            return Permission(True, "operator at the CLI with the host's SSH key", code="cli")
        if self.settings.four_eyes and actor == requested_by:
            refusal = Permission(False, "four eyes: whoever ran the check may not approve its fix; "
                               "ask another approver", code="four_eyes")
        elif await self.is_approver(host, actor, actor_groups):
            return Permission(True, "approver for this host", code="approver")
        else:
            who = self.approvers_for(host)
            refusal = Permission(False, f"you may not approve fixes on {host.name}" + (
                "" if who else " (no approvers are configured for this host)"),
                code="not_approver", approvers=who)
        if break_glass_reason is not None:
            return self._break_glass(break_glass_reason)
        return refusal

    def _break_glass(self, reason: str) -> Permission:
        if not self.settings.break_glass:
            return Permission(False, "break-glass is turned off", code="break_glass_off")
        if len(reason.strip()) < MIN_REASON:
            return Permission(False, f"break-glass needs a typed reason (at least {MIN_REASON} "
                            "characters)", code="break_glass_reason")
        return Permission(True, f"BREAK-GLASS: {reason.strip()}", break_glass=True,
                        code="break_glass")


def slack_group_members(client) -> GroupMembers:
    """Membership of a Slack user group via usergroups.users.list (an AsyncWebClient)."""

    async def members(group: str) -> list[str]:
        resp = await client.usergroups_users_list(usergroup=group)
        return list(resp.get("users") or [])

    return members
