"""The data that flows between transport, checks, engine and renderers.

Commands and their results are plain frozen dataclasses (internal). The
report and everything in it are pydantic models: the JSON report is a
contract documented in README.md.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INBOUND_PORTS: tuple[int, ...] = (25, 465, 587, 143, 993)
OUTBOUND_PORTS: tuple[int, ...] = (25, 465, 587)

Direction = Literal["inbound", "outbound"]
Family = Literal["ipv4", "ipv6"]
Outside = Literal["open", "refused", "rejected", "filtered", "error"]
Listening = Literal["public", "loopback", "forwarded", "none", "unknown"]
FirewallVerdict = Literal["allow", "block", "unknown"]
Severity = Literal["info", "warning", "error", "critical"]
Role = Literal["cause", "symptom", "note"]
StepStatus = Literal["ok", "warn", "fail", "error", "skipped"]
# a slow greeting: postscreen's 220- pre-greeting, lines trickling in (a tarpit), silence first
GreetingWait = Literal["pregreet", "trickle", "silence"]


class PortKey(NamedTuple):
    """One mail port in one direction and address family: the key of every per-port table.

    A tuple, so it compares equal to ("inbound", "ipv4", 25) and serialises as a JSON list.
    """

    direction: Direction
    family: Family
    port: int

    @property
    def label(self) -> str:
        """'25/IPv4'."""
        return f"{self.port}/{'IPv6' if self.family == 'ipv6' else 'IPv4'}"


@dataclass(frozen=True)
class Actor:
    """Who asked for something: a Slack user (id U…) or a terminal user (their login).

    Trust decisions read `kind`, never a string prefix. `str(actor)` is the audit form:
    the Slack user id, or 'cli:LOGIN'.
    """

    kind: Literal["slack", "cli"]
    id: str

    def __str__(self) -> str:
        return self.id if self.kind == "slack" else f"cli:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Actor:
        """The inverse of str(): 'cli:root' -> Actor('cli', 'root'); 'U123' -> Actor('slack', 'U123')."""
        if text.startswith("cli:"):
            return cls("cli", text[4:])
        return cls("slack", text)


@dataclass(frozen=True)
class Command:
    """A command to run on the host, as an argv tuple (never a shell string).

    `env` is only ever a fixed set of names chosen by mailcheck (e.g. LANG=C).
    """

    argv: tuple[str, ...]
    timeout: float = 15.0
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ValueError(f"bad argv: {self.argv!r}")

    @property
    def display(self) -> str:
        """The command as a person would type it (quoted by shlex)."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return f"{prefix} {shlex.join(self.argv)}".strip()


@dataclass(frozen=True)
class CommandResult:
    """What one command did. A non-zero exit status is data, not an error."""

    command: Command
    exit_status: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    @property
    def missing(self) -> bool:
        """The program is not installed (exit 127 from the shell or timeout)."""
        return self.exit_status == 127


class AddressException(BaseModel):
    """Peer addresses (sources inbound, destinations outbound) whose firewall verdict differs from
    the one for addresses in general, with the rule that decides it: a deny list's networks."""

    model_config = ConfigDict(frozen=True)

    networks: tuple[str, ...]  # CIDR, fewest that cover exactly the range
    firewall: FirewallVerdict
    rule: str | None = None  # block: the blocking rule or policy; allow: the accept; unknown: why


class IcmpAnswer(BaseModel):
    """The ICMP error that answered the outside probe (an `outside: rejected` port, mostly)."""

    type: int
    code: int
    name: str  # as iptables' --reject-with / nft's `reject with` say it: host-prohibited, ...
    sender: str | None  # who sent it (the offender address the kernel reported)
    by: Literal["host", "path", "prober", "unknown"]  # the host itself, a router, mailcheck's side


class VantageView(BaseModel):
    """What a probe from a vantage point (an inventory host with `vantage: true`) got on a port,
    classified as the outside probe's `outside` is; `unknown` when its tool cannot tell."""

    vantage: str  # the inventory host that probed
    source: str | None = None  # its source address
    outside: Outside | Literal["unknown"]
    detail: str | None = None  # what it was told (errno, the ICMP answer and its sender)


class PortStatus(BaseModel):
    port: int
    direction: Direction
    family: Family = "ipv4"
    outside: Outside | None = None
    listening: Listening = "unknown"
    process: str | None = None
    firewall: FirewallVerdict = "unknown"
    blocked_by: str | None = None
    dnat: str | None = None  # a published port: "198.19.8.2:25 (<the nat rule>)", where it really goes
    detail: str | None = None  # what the outside probe saw: SMTP banner / STARTTLS, TLS certificate
    firewall_general: FirewallVerdict | None = None  # for peer addresses no exception lists
    except_sources: list[AddressException] | None = None  # inbound; None: not known / not listed
    except_destinations: list[AddressException] | None = None  # outbound
    icmp: IcmpAnswer | None = None  # the ICMP answer to the outside probe, and who sent it
    greeting_time: float | None = None  # s from connect to the SMTP greeting (25/587) / TLS answer
    greeting_wait: GreetingWait | None = None  # the shape of a slow greeting's wait
    plaintext: str | None = None  # the plain-text line sent where TLS was expected (465/993)
    vantage: list[VantageView] = Field(default_factory=list)  # the vantage points' probes

    @property
    def key(self) -> PortKey:
        return PortKey(self.direction, self.family, self.port)

    def firewall_for(self, address: str) -> FirewallVerdict:
        """The firewall's verdict for one peer address (a source inbound, a destination outbound):
        its exception's, else firewall_general's; `unknown` when the exceptions are not listed.
        Without exact ranges (no ruleset analysed): the port's `firewall`."""
        listed = self.except_sources if self.direction == "inbound" else self.except_destinations
        if self.firewall_general is None:
            return self.firewall
        if listed is None:
            return "unknown"
        ip = ipaddress.ip_address(address)
        hit = next((e for e in listed if any(ip in ipaddress.ip_network(n) for n in e.networks
                                              if ipaddress.ip_network(n).version == ip.version)), None)
        return hit.firewall if hit is not None else self.firewall_general

    def exceptions_text(self, shown: int = 2) -> str | None:
        """'block for 192.0.2.0/24' / 'block to 192.0.2.0/24, 198.51.100.0/24 and 3 more' (the
        peer ranges treated unlike the rest), 'exceptions not listed', or None."""
        listed = self.except_sources if self.direction == "inbound" else self.except_destinations
        if listed is None:
            return "exceptions not listed" if self.firewall_general is not None else None
        to = "for" if self.direction == "inbound" else "to"
        parts = []
        for e in listed:
            more = len(e.networks) - shown
            parts.append(f"{e.firewall} {to} {', '.join(e.networks[:shown])}" + (f" and {more} more" if more > 0 else ""))
        return "; ".join(parts) or None


class PortUpdate(BaseModel):
    """What a step learned about one port: the PortStatus fields it sets, and only those.

    A misspelled or unknown field is an error (extra="forbid"), and applying it
    validates the result, so a wrong value cannot reach the report.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    outside: Outside | None = None
    listening: Listening = "unknown"
    process: str | None = None
    firewall: FirewallVerdict = "unknown"
    blocked_by: str | None = None
    dnat: str | None = None
    detail: str | None = None
    firewall_general: FirewallVerdict | None = None
    except_sources: list[AddressException] | None = None
    except_destinations: list[AddressException] | None = None
    icmp: IcmpAnswer | None = None
    greeting_time: float | None = None
    greeting_wait: GreetingWait | None = None
    plaintext: str | None = None
    vantage: list[VantageView] = Field(default_factory=list)

    def apply(self, port: PortStatus) -> PortStatus:
        """`port` with the fields this update set (explicitly, None included) replaced."""
        return PortStatus.model_validate({**port.model_dump(), **self.model_dump(exclude_unset=True)})


class Finding(BaseModel):
    """One thing a step found. `ports`: the mail ports it affects. `role`: a cause (a rule, a
    daemon, the provider, a record...), a symptom (what is seen from outside: a port filtered),
    or a note (neither); None: its code's role in the catalogue. `id` and `caused_by` (the ids
    of the causes that explain a symptom) are filled in by bot.diagnosis."""

    code: str
    severity: Severity
    summary: str
    evidence: str = ""
    fixes: list[str] = Field(default_factory=list)
    step: str = ""
    id: str = ""
    role: Role | None = None
    ports: list[PortKey] = Field(default_factory=list)
    caused_by: list[str] = Field(default_factory=list)
    # a change mailcheck does not make itself (DNS is usually not on the host):
    records: list[str] = Field(default_factory=list)  # zone-file lines ready to paste
    advice: str = ""  # who must make the change (DNS provider, address owner) and how


class Precondition(BaseModel):
    """A read-only command whose result must still be as it was at planning time."""

    argv: list[str]
    description: str
    expect_exit: int | None = 0
    expect_failure: bool = False  # the command must exit non-zero (a service still down)
    expect_sha256: str | None = None  # sha256 of the normalised stdout
    normalize: Literal["raw", "iptables-save", "nft"] = "raw"


RulesetKind = Literal["iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy",
                      "iptables-nft", "ip6tables-nft", "nft"]


class BackupSpec(BaseModel):
    """What a fix's backup holds, declared by whoever builds the Fix.

    bot/fixes/backup.py derives everything else from it and knows no backend by name:
    the backup on the host, its test-load before the guard is armed, the restore, the
    dead-man guard and the before/after dumps.

    - `rulesets`: kernel rulesets saved, test-loaded and restored exactly. An iptables
      kind K is `K-save` / `K-restore --test` / `K-restore` (e.g. "iptables",
      "ip6tables-legacy"); "nft" is `nft list ruleset` after `flush ruleset` /
      `nft -c -f` / `nft -f`.
    - `nft_tables`: native nft tables ("inet mailfw") saved, test-loaded and restored each
      on its own (`table F T; delete table F T; <nft list table F T>`, atomic per table; a
      table that did not exist is removed): exact, and it leaves the other tables alone
      (iptables-nft's, whose xt rules `nft -f` cannot load, fail2ban's bans).
    - `compare`: rulesets only dumped before and after (for the report and rollback's
      drift check), not restored: `reload` rebuilds them (firewalld).
    - `paths`: absolute files or directories copied into the backup and put back
      exactly (a directory's contents are replaced; a path that did not exist is removed).
    - `reload`: commands run after the paths and rulesets are restored
      (`firewall-cmd --reload`, `csf -r`, a config test and a restart).
    - `undo`: the exact undo of the fix's commands alone (no persistence), in the order it
      runs. When a ruleset backup would not load (nft with iptables-nft's xt rules), the
      guard and the rollback use it instead; without it such a fix is refused.
    - `guard`: the change can cut mailcheck's SSH: a dead-man job on the host restores
      the backup unless mailcheck confirms over a fresh connection.

    A Fix of kind "firewall" must declare one (None there is refused when applied);
    `BackupSpec()` declares "nothing to save" (the restore is then `Fix.rollback`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rulesets: list[RulesetKind] = Field(default_factory=list)
    nft_tables: list[str] = Field(default_factory=list)
    compare: list[RulesetKind] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    reload: list[list[str]] = Field(default_factory=list)
    undo: list[list[str]] = Field(default_factory=list)
    guard: bool = False

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for p in paths:
            parts = p.split("/")
            if (not p.startswith("/") or len([x for x in parts if x]) < 2 or ".." in parts
                    or "." in parts or "" in parts[1:] or any(c in p for c in "\0\n")):
                raise ValueError(f"backup path {p!r}: an absolute, normalised path below a "
                                 "top-level directory (e.g. /etc/ufw)")
        return paths

    @field_validator("nft_tables")
    @classmethod
    def _tables(cls, tables: list[str]) -> list[str]:
        for t in tables:
            if not re.fullmatch(r"(ip|ip6|inet|arp|bridge|netdev) [A-Za-z_][A-Za-z0-9_.\-]{0,63}", t):
                raise ValueError(f"nft table {t!r}: 'FAMILY NAME', e.g. 'inet mailfw'")
        return tables

    @model_validator(mode="after")
    def _guard_restores_something(self) -> BackupSpec:
        if self.guard and not (self.rulesets or self.nft_tables or self.paths or self.undo):
            raise ValueError("a guard needs something to restore (rulesets, nft_tables, paths or undo)")
        return self

    @property
    def saves_anything(self) -> bool:
        return bool(self.rulesets or self.nft_tables or self.paths)


class Fix(BaseModel):
    id: str
    kind: Literal["firewall", "service", "config", "tools", "persist"]
    summary: str
    label: str = ""  # what it does, in a few words ("Delete INPUT rule 2"): its button's text
    commands: list[list[str]]
    rollback: list[list[str]] = Field(default_factory=list)
    persist: list[list[str]] = Field(default_factory=list)
    preconditions: list[Precondition] = Field(default_factory=list)
    backend: str | None = None  # iptables, ip6tables, nft, ufw, firewalld, systemd, ...
    expected_allow: list[PortKey] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    backup: BackupSpec | None = None  # what to save and restore; required for kind "firewall"
    timeout: float | None = Field(None, gt=0, le=3600)  # each command's budget (default: settings)
    env: dict[str, str] = Field(default_factory=dict)  # e.g. DEBIAN_FRONTEND=noninteractive

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for k, v in env.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", k) or "\0" in v or "\n" in v:
                raise ValueError(f"environment {k}={v!r}: upper-case names and one-line values only")
        return env

    @property
    def shell_commands(self) -> list[str]:
        return [shlex.join(c) for c in self.commands]


class StepResult(BaseModel):
    name: str
    status: StepStatus
    summary: str
    evidence: str = ""
    error: str | None = None
    duration: float = 0.0


class Report(BaseModel):
    host: str
    address: str
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    steps: list[StepResult] = Field(default_factory=list)
    ports: list[PortStatus] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    fixes: list[Fix] = Field(default_factory=list)
    causes: list[str] = Field(default_factory=list)  # the verdict: ids of the causes, worst first

    @property
    def verdict(self) -> Literal["ok", "broken", "error"]:
        if any(f.severity in ("error", "critical") for f in self.findings):
            return "broken"
        if any(s.status == "error" for s in self.steps):
            return "error"
        return "ok"

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "broken": 1, "error": 2}[self.verdict]

    def to_json_dict(self) -> dict:
        data = self.model_dump(mode="json")
        data["verdict"] = self.verdict
        data["exit_code"] = self.exit_code
        return data
