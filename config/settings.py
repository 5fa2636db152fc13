"""Settings, built once in the entry point and passed down.

Every name is read with the prefix MAILCHECK_ (and from a .env file), except
Slack's standard names SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN.
Secrets are SecretStr: their repr and str never show the value.

`load_settings()` reads `.env` only from the working directory the operator
started mailcheck in, and only when that file is a regular file owned by the
user running mailcheck (or root) that nobody else may write: a `.env` planted
by someone else (e.g. in a writable data volume) is refused, not read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError
from bot.outbound import DEFAULT_TARGETS

KILL_AFTER, MARGIN = 2, 2  # as bot.fixes.apply: `timeout -k 2`, and arming / round trips


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILCHECK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    inventory: Path | None = None
    # SSH
    connect_timeout: float = Field(10.0, gt=0, le=300)
    command_timeout: float = Field(20.0, gt=0, le=3600)
    keepalive_interval: float = Field(15.0, ge=0, le=3600)
    max_channels: int = Field(8, ge=1, le=100)
    # outside probes
    # output kept from a host, in bytes: of each command's stdout (and stderr; a longer one is
    # not read, and the command counts as failed), and of one batch in all (else an error)
    max_output: int = Field(8 << 20, ge=4096)
    max_host_output: int = Field(32 << 20, ge=4096)
    probe_timeout: float = Field(4.0, gt=0, le=300)  # each TCP connect
    # on a port that connected: the greeting, EHLO, TLS handshake
    greeting_timeout: float = Field(30.0, gt=0, le=300)
    # outbound test: the servers the host connects to (host:port, ...; `off` skips it), and who
    # holds the host's address (RDAP base URL below, whois server host[:port]; each may be `off`)
    outbound_targets: str = DEFAULT_TARGETS
    whois_server: str = "whois.iana.org"
    owner_timeout: float = Field(5.0, gt=0, le=300)
    # fleets (`mailcheck check group:NAME | tag:NAME | all`): hosts checked at once, and each
    # host's deadline for its whole check (None: host_deadline_or_default())
    fleet_concurrency: int = Field(50, ge=1)
    host_deadline: float | None = Field(None, gt=0)
    # DNS and reputation (bot/dns): the nameservers mailcheck asks ("ip[:port]" comma-separated;
    # empty: the system's resolv.conf), one lifetime per lookup, the DNSBL zones, RDAP's base
    # URL, and a CA bundle used *instead of* the system store for mailcheck's own HTTPS
    # fetches (MTA-STS policies, RDAP): certificates are always verified.
    resolvers: str = ""
    dns_timeout: float = Field(5.0, gt=0, le=300)
    dnsbl_zones: str = "zen.spamhaus.org,bl.spamcop.net,psbl.surriel.com,bl.mailspike.net"
    rdap_url: str = "https://rdap.org/"
    ca_file: Path | None = None
    # Slack
    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "MAILCHECK_SLACK_BOT_TOKEN")
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "MAILCHECK_SLACK_SIGNING_SECRET"),
    )
    slack_app_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "MAILCHECK_SLACK_APP_TOKEN")
    )
    slack_api_url: str | None = None
    http_port: int = Field(3000, ge=0, le=65535)
    http_host: str = "0.0.0.0"
    # fixes
    read_only: bool = False
    four_eyes: bool = False
    break_glass: bool = False
    plan_ttl: int = Field(900, ge=0, le=7 * 86400)
    lockout_deadline: int = Field(60, ge=5, le=3600)
    db_path: Path = Path("mailcheck.db")
    # the store: sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DB (replicas of serve);
    # unset: sqlite:/// of db_path
    db_url: SecretStr | None = None
    backup_dir: Path = Path("/var/backups/mailcheck")  # on the host: rule backups before a fix
    lock_wait: float = Field(30.0, ge=0, le=3600)  # seconds a fix waits for another on the host
    drain_timeout: float = Field(120.0, ge=0, le=3600)  # on SIGTERM, serve lets fixes finish
    # serve re-reads plans left mid-apply (by a replica that died) this often; 0: at start only
    reconcile_interval: float = Field(30.0, ge=0, le=86400)

    @property
    def store_url(self) -> str:
        """MAILCHECK_DB_URL, or the SQLite file db_path."""
        if self.db_url is not None and self.db_url.get_secret_value():
            return self.db_url.get_secret_value()
        return f"sqlite:///{self.db_path}"

    @property
    def database(self) -> str:
        """The store, as people may read it (no password): lock holders, logs."""
        if self.db_url is None or not self.db_url.get_secret_value():
            return str(self.db_path.absolute())
        return redact_url(self.store_url)

    def host_deadline_or_default(self) -> float:
        """A host's deadline in a fleet: host_deadline, or the most its own timeouts allow
        (two SSH connects for a jump host, the two batches' budgets, a probe's connect and two
        greeting timeouts for its greeting, EHLO and TLS) - a host within its timeouts is never cut."""
        if self.host_deadline is not None:
            return self.host_deadline
        return (2 * self.connect_timeout + 2 * (self.command_timeout + 10) + self.probe_timeout
                + 2 * self.greeting_timeout)

    @field_validator("backup_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute() or ".." in v.parts or len(v.parts) < 3:
            raise ValueError(f"{v}: an absolute path on the host, below a top-level directory")
        return v

    @model_validator(mode="after")
    def _deadline_above_a_command(self) -> Settings:
        one = max(1, round(self.command_timeout)) + KILL_AFTER + self.connect_timeout + MARGIN
        if self.lockout_deadline <= one:
            raise ValueError(
                f"MAILCHECK_LOCKOUT_DEADLINE ({self.lockout_deadline}s) must be above one fix "
                f"command's budget and a confirming connection ({one:.0f}s: "
                "MAILCHECK_COMMAND_TIMEOUT + 2 + MAILCHECK_CONNECT_TIMEOUT + 2), or the guard "
                "would restore in the middle of an apply")
        return self


def redact_url(url: str) -> str:
    """`url` without its password (for logs, lock holders, /readyz)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def env_file_problem(path: Path) -> str | None:
    """Why `path` (a .env) must not be read, or None."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"{path.resolve()} is not a regular file"
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path.resolve()} belongs to uid {st.st_uid}, not to the user running mailcheck"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path.resolve()} may be written by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def load_settings(cwd: Path | None = None) -> Settings:
    """The settings of the entry point: environment, then `.env` in the working directory
    (only if env_file_problem finds nothing). Raises ConfigError with a clear message."""
    env = (cwd or Path.cwd()) / ".env"
    problem = env_file_problem(env)
    if problem:
        raise ConfigError(f"refusing to read {problem}: settings could be planted there "
                          "(chmod go-w, or start mailcheck in another directory)")
    try:
        return Settings(_env_file=env if env.exists() else None)
    except ValidationError as e:
        raise ConfigError(f"bad settings:\n{e}") from e
