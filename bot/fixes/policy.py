"""Who may apply a fix, and when nobody may.

Approvers come from the inventory: a host's own `approvers` (Slack user IDs)
and `approver_groups` (Slack user group IDs), plus every `approvals` rule
that matches the host by name, inventory group or tag. Membership of a
Slack user group is resolved by an injected async callable (in production
Slack's usergroups.users.list), so the policy is testable without Slack.

Order of the checks: read-only first (nothing is applied during a freeze,
not even break-glass), then four eyes (whoever requested this plan, or an
identical one by pressing Re-check, may not approve it), then approver lists.
A user-group lookup that fails (a 429, a missing scope) refuses, saying why;
memberships are cached for `GROUP_TTL` seconds (`CachedGroups`). Only when those
refuse, and only when settings.break_glass is on, a typed reason opens the
break-glass path (the caller announces it in the channel and audits it).

An Actor of kind "cli" is a person at a terminal holding the SSH key to the
host: approver lists do not apply to them (they could run the commands by
hand), the read-only switch does. Only the kind decides that, never the text
of an id: a Slack user id is always of kind "slack".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from bot.models import Actor
from config.inventory import Host, Inventory
from config.settings import Settings

GroupMembers = Callable[[str], Awaitable[Iterable[str]]]
MIN_REASON = 10
GROUP_TTL = 60.0


class GroupLookupError(Exception):
    """A user group's members could not be read (rate-limited, missing scope, ...)."""


@dataclass
class CachedGroups:
    """A GroupMembers that remembers each group's members for `ttl` seconds (failures are not
    remembered) and turns any failure into GroupLookupError naming the group."""

    lookup: GroupMembers
    ttl: float = GROUP_TTL
    _cache: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)

    async def __call__(self, group: str) -> frozenset[str]:
        hit = self._cache.get(group)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            members = frozenset(await self.lookup(group))
        except Exception as e:  # noqa: BLE001 - any failure of the lookup refuses, with its reason
            raise GroupLookupError(f"could not read the members of user group {group} "
                                   f"({type(e).__name__}: {_reason(e)})") from e
        self._cache[group] = (time.monotonic() + self.ttl, members)
        return members


def _reason(e: Exception) -> str:
    response = getattr(e, "response", None)
    error = response.get("error") if hasattr(response, "get") else None
    return str(error or e)[:200]


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
        self.group_members = group_members if isinstance(group_members, CachedGroups) \
            else CachedGroups(group_members)

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
        """A Slack user named (or in a user group named) as an approver for `host`.
        Raises GroupLookupError when a group's members cannot be read."""
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
        self, host: Host, actor: Actor, requested_by: Actor | Iterable[Actor] | None, *,
        actor_groups: Iterable[str] | None = None, break_glass_reason: str | None = None,
    ) -> Permission:
        """May `actor` apply a fix on `host` that `requested_by` asked for? `requested_by`:
        the requester, or everyone who requested this plan's content (Re-check included)."""
        if self.settings.read_only:
            return Permission(False, "mailcheck is read-only (change freeze): fixes are not "
                            "applied; checks still run", code="read_only")
        if actor.kind == "cli":
            return Permission(True, "operator at the CLI with the host's SSH key", code="cli")
        requesters = {requested_by} if isinstance(requested_by, Actor) else set(requested_by or ())
        try:
            approver = await self.is_approver(host, actor, actor_groups)
        except GroupLookupError as e:
            return Permission(False, f"{e}: refused, since whether you may approve is unknown; "
                              "try again in a minute", code="group_lookup_failed")
        if self.settings.four_eyes and actor in requesters:
            refusal = Permission(False, "four eyes: whoever ran the check (or pressed Re-check and "
                               "got this same plan) may not approve its fix; ask another approver",
                               code="four_eyes")
        elif approver:
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
