"""Settings, built once in the entry point and passed down.

Every name is read with the prefix MAILCHECK_ (and from a .env file), except
Slack's standard names SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN.
Secrets are SecretStr: their repr and str never show the value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILCHECK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    inventory: Path | None = None
    # SSH
    connect_timeout: float = 10.0
    command_timeout: float = 20.0
    keepalive_interval: float = 15.0
    max_channels: int = 8
    # output kept from a host, in bytes: of each command's stdout (and stderr; a longer one is
    # not read, and the command counts as failed), and of one batch in all (else an error)
    max_output: int = Field(8 << 20, ge=4096)
    max_host_output: int = Field(32 << 20, ge=4096)
    # outside probes
    probe_timeout: float = 4.0
    # fleets (`mailcheck check group:NAME | tag:NAME | all`): hosts checked at once, and each
    # host's deadline for its whole check (None: host_deadline_or_default())
    fleet_concurrency: int = Field(50, ge=1)
    host_deadline: float | None = Field(None, gt=0)
    # DNS and reputation (bot/dns): the nameservers mailcheck asks ("ip[:port]" comma-separated;
    # empty: the system's resolv.conf), one lifetime per lookup, the DNSBL zones, RDAP's base
    # URL, and a CA bundle used *instead of* the system store for mailcheck's own HTTPS
    # fetches (MTA-STS policies, RDAP): certificates are always verified.
    resolvers: str = ""
    dns_timeout: float = 5.0
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
    http_port: int = 3000
    http_host: str = "0.0.0.0"
    # fixes
    read_only: bool = False
    four_eyes: bool = False
    break_glass: bool = False
    plan_ttl: int = 900
    lockout_deadline: int = 60
    db_path: Path = Path("mailcheck.db")
    backup_dir: Path = Path("/var/backups/mailcheck")  # on the host: rule backups before a fix
    lock_wait: float = 30.0  # seconds a fix waits for another fix on the same host

    def host_deadline_or_default(self) -> float:
        """A host's deadline in a fleet: host_deadline, or the most its own timeouts allow
        (two SSH connects for a jump host, the two batches' budgets, three probe timeouts
        for a connect, a greeting and EHLO) - a host within its timeouts is never cut."""
        if self.host_deadline is not None:
            return self.host_deadline
        return 2 * self.connect_timeout + 2 * (self.command_timeout + 10) + 3 * self.probe_timeout
