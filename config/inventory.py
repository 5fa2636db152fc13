"""The host inventory: the only hosts the Slack bot will ever touch.

YAML (.yaml/.yml) or TOML (.toml); see config/inventory.example.yaml.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError, TargetError

# Always fullmatch: `$` also matches before a final newline, and "root\n" must not be a user.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def valid_address(value: str) -> str:
    """An IP address or a DNS host name; nothing else (no spaces, no shell syntax)."""
    v = value
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(v) and not v.startswith("-"):
        return v
    raise ValueError(f"not an IP address or host name: {value!r}")


def valid_domain(value: str) -> str:
    """A mail domain (a DNS name with at least one dot), lower-cased, no final dot.
    TargetError otherwise."""
    v = value.strip().lower().rstrip(".")
    # a top-level domain is never all digits: that is an IPv4 address
    if "." not in v or not _HOSTNAME.fullmatch(v) or v.startswith("-") or v.rsplit(".", 1)[1].isdigit():
        raise TargetError(f"not a mail domain: {value[:80]!r} (a DNS name such as example.com)")
    return v


class Host(BaseModel):
    name: str
    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path | None = None
    sudo: bool | None = None  # None: use sudo -n when user is not root
    tags: list[str] = Field(default_factory=list)
    jump: str | None = None  # another inventory name, or [user@]host[:port]
    approvers: list[str] = Field(default_factory=list)  # Slack user IDs
    approver_groups: list[str] = Field(default_factory=list)  # Slack user group IDs
    # the mail domains this host serves (inventory `domain:`, one or a list); none: the MTA's
    domains: list[str] = Field(default_factory=list, validation_alias=AliasChoices("domain", "domains"))
    # a vantage point: it probes the other hosts' mail ports too, over its SSH connection
    vantage: StrictBool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(f"bad host name {v!r}: letters, digits, '.', '_' and '-' only")
        if is_selector(v):
            raise ValueError(f"host name {v!r} reads as a selection of hosts ('all', 'group:NAME', "
                             "'tag:NAME'): rename the host")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return valid_address(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not _USER.fullmatch(v):
            raise ValueError(f"bad user name {v!r}")
        return v

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, v) -> list[str]:
        names = [v] if isinstance(v, str) else list(v or [])
        try:
            return list(dict.fromkeys(valid_domain(str(n)) for n in names))
        except TargetError as e:
            raise ValueError(str(e)) from None

    @property
    def use_sudo(self) -> bool:
        return self.user != "root" if self.sudo is None else self.sudo


class ApprovalRule(BaseModel):
    """Who may approve fixes on the hosts it matches (by name, group or tag)."""

    hosts: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)


class Inventory(BaseModel):
    hosts: dict[str, Host] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    approvals: list[ApprovalRule] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fill_names(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            raise ValueError("the inventory must be a mapping with a 'hosts' key")
        defaults = data.get("defaults") or {}
        hosts = data.get("hosts") or {}
        if not isinstance(defaults, dict):
            raise ValueError("'defaults' must be a mapping of host settings")
        if not isinstance(hosts, dict):
            raise ValueError("'hosts' must be a mapping of name -> host")
        for name, spec in hosts.items():
            if not isinstance(name, str) or not isinstance(spec, dict | None):
                raise ValueError(f"host {name!r}: expected a mapping of its settings (address, "
                                 f"port, ...), got {type(spec).__name__}")
        data = {k: v for k, v in data.items() if k != "defaults"}
        data["hosts"] = {
            name: {**defaults, **(spec or {}), "name": name} for name, spec in hosts.items()
        }
        return data

    @model_validator(mode="after")
    def _check_refs(self) -> Inventory:
        for group, members in self.groups.items():
            for m in members:
                if m not in self.hosts:
                    raise ValueError(f"group {group!r} names unknown host {m!r}")
        for host in self.hosts.values():
            if host.jump is not None:
                _check_jump(host, self)
        return self

    def get(self, name: str) -> Host:
        host = self.hosts.get(name)
        if host is None:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise TargetError(f"{name!r} is not in the inventory (known hosts: {known})")
        return host

    def vantages(self, host: Host) -> tuple[Host, ...]:
        """The vantage points (`vantage: true`) that probe `host`: all but itself (by name or
        address)."""
        return tuple(h for h in self.hosts.values()
                     if h.vantage and h.name != host.name and h.address != host.address)

    def groups_of(self, name: str) -> list[str]:
        return [g for g, members in self.groups.items() if name in members]


def is_selector(target: str) -> bool:
    """Does `target` select several inventory hosts: `all`, `group:NAME`, `tag:NAME`?"""
    return target == "all" or target.startswith(("group:", "tag:"))


def select_hosts(selector: str, inventory: Inventory) -> list[Host]:
    """The inventory hosts `selector` names, in the inventory's order (a group: in its own).

    TargetError, naming what exists, when the selector is malformed or selects no host.
    """
    kind, _, name = selector.partition(":")
    if selector == "all":
        hosts = list(inventory.hosts.values())
        if not hosts:
            raise TargetError("'all' selects no host: the inventory is empty "
                              "(set MAILCHECK_INVENTORY to the inventory file)")
        return hosts
    if kind not in ("group", "tag") or not name.strip():
        raise TargetError(f"malformed selector {selector!r}: expected all, group:NAME or tag:NAME")
    if kind == "group":
        if name not in inventory.groups:
            known = ", ".join(sorted(inventory.groups)) or "none"
            raise TargetError(f"no group {name!r} in the inventory (groups: {known})")
        hosts = [inventory.hosts[m] for m in dict.fromkeys(inventory.groups[name])]
    else:
        hosts = [h for h in inventory.hosts.values() if name in h.tags]
        if not hosts:
            known = ", ".join(sorted({t for h in inventory.hosts.values() for t in h.tags})) or "none"
            raise TargetError(f"no inventory host has tag {name!r} (tags: {known})")
    if not hosts:
        raise TargetError(f"group {name!r} has no hosts")
    return hosts


def _check_jump(host: Host, inventory: Inventory) -> None:
    """A jump host is another inventory host without a jump of its own (one hop), or
    [user@]host[:port]."""
    jump = host.jump or ""
    if jump == host.name:
        raise ValueError(f"host {host.name!r}: jump names the host itself")
    if jump in inventory.hosts:
        if inventory.hosts[jump].jump:
            raise ValueError(f"host {host.name!r}: jump host {jump!r} has a jump of its own; "
                             "mailcheck goes through one jump host")
        return
    m = _TARGET.fullmatch(jump)
    if not m:
        raise ValueError(f"host {host.name!r}: jump {jump!r} is neither an inventory host nor "
                         "[user@]host[:port]")
    try:
        valid_address(m["host"])
        if m["user"] and not _USER.fullmatch(m["user"]):
            raise ValueError(f"bad user name {m['user']!r}")
        if m["port"] and not 1 <= int(m["port"]) <= 65535:
            raise ValueError(f"bad port {m['port']}")
    except ValueError as e:
        raise ValueError(f"host {host.name!r}: jump {jump!r}: {e}") from None


def load_inventory(path: Path | None) -> Inventory:
    """Read the inventory file. No file configured means an empty inventory."""
    if path is None:
        return Inventory()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read inventory {path}: {e.strerror}") from e
    try:
        if str(path).endswith(".toml"):
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"inventory {path} does not parse: {e}") from e
    try:
        return Inventory.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"inventory {path} is invalid:\n{e}") from e
    except (TypeError, ValueError) as e:  # anything pydantic did not wrap is still bad input
        raise ConfigError(f"inventory {path} is invalid: {e}") from e


_TARGET = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:\s\[\]@]+)(?::(?P<port>\d{1,5}))?")


def parse_target(
    target: str,
    inventory: Inventory,
    identity_file: Path | None = None,
    known_hosts: Path | None = None,
) -> Host:
    """An inventory name, or for ad-hoc use `[user@]host[:port]`."""
    if target in inventory.hosts:
        return inventory.hosts[target]
    m = _TARGET.fullmatch(target or "")
    if not m:
        raise TargetError(f"malformed target {target!r}: expected an inventory name or [user@]host[:port]")
    port = int(m["port"]) if m["port"] else 22
    try:
        return Host(
            name=valid_address(m["host"]),
            address=m["host"],
            port=port,
            user=m["user"] or "root",
            identity_file=identity_file,
            known_hosts=known_hosts,
        )
    except (ValidationError, ValueError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise TargetError(f"malformed target {target!r}: {msg}") from e


def resolve_target(
    target: str,
    inventory: Inventory,
    identity_file: Path | None = None,
    known_hosts: Path | None = None,
) -> Host:
    """What a person typed after `mailcheck check` / `mailcheck fix`: an inventory name, or
    `[user@]host[:port]`.

    A bare single word that is not in the inventory is taken for a mistyped inventory
    name (the TargetError lists the known ones), not for a host name: ad-hoc hosts need a
    dotted name, an IP address or `user@`.
    """
    if is_selector(target):
        raise TargetError(f"{target!r} selects several hosts: `mailcheck check {target}` checks "
                          "them; a fix is made one host at a time (mailcheck fix HOST)")
    bare = not any(c in target for c in "@:.[") and target != "localhost"
    if bare and target not in inventory.hosts:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            inventory.get(target)  # raises TargetError naming the known hosts
    return parse_target(target, inventory, identity_file, known_hosts)
