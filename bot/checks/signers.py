"""The host's DKIM signers, read over SSH: the selector and key file each one signs with,
and the public half of each key.

First round (with every step's commands): exim's smtp transports (`exim -bP transports`,
bot/checks/mta_config.py), /etc/opendkim.conf and rspamd's dkim_signing.conf
(override.d, local.d, modules.d: the first that names a selector wins). Once those are
in: opendkim's KeyTable and SigningTable, and for every key file a signer names for a
checked domain, `openssl pkey -pubout -in FILE`. The host derives the public key: the
private key never leaves it (not over SSH, not in the batch's output files, not in
mailcheck's memory), and evidence shows fingerprints only.

rspamd signs a domain only when its key file exists (its default configuration names a
path for every domain): a missing rspamd key is "does not sign this domain". For exim
and opendkim a missing key is a finding (mail leaves unsigned).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.checks import mta_config
from bot.dns.dkim_config import (
    Signer,
    exim_signers,
    opendkim_signers,
    opendkim_tables,
    rspamd_signers,
)
from bot.models import Command, CommandResult

Results = Mapping[tuple[str, ...], CommandResult]

OPENDKIM_CONF = ("cat", "/etc/opendkim.conf")
RSPAMD_CONFS = tuple(("cat", f"/etc/rspamd/{d}/dkim_signing.conf") for d in ("override.d", "local.d", "modules.d"))


def pubkey_argv(path: str) -> tuple[str, ...]:
    return ("openssl", "pkey", "-pubout", "-in", path)


@dataclass(frozen=True)
class HostSigners:
    signers: list[Signer] | None = None  # None: the configuration could not be read
    keys: dict[str, bytes] = field(default_factory=dict)  # key path -> public key PEM
    key_errors: dict[str, str] = field(default_factory=dict)  # key path -> why it is unknown


def commands(results: Results, domains: Sequence[str]) -> list[Command]:
    """The signers' configuration; with it in, their tables and keys for `domains`."""
    first = [Command(OPENDKIM_CONF, timeout=5), *(Command(argv, timeout=5) for argv in RSPAMD_CONFS)]
    if not all(c.argv in results for c in first):
        return first
    tables = [Command(("cat", path), timeout=5) for path in opendkim_tables(_text(results, OPENDKIM_CONF))]
    keys = [Command(pubkey_argv(p), timeout=10) for p in key_paths(_configured(results) or [], domains)]
    return first + tables + keys


def key_paths(signers: list[Signer], domains: Sequence[str]) -> list[str]:
    """The key files the signers name for these domains (expansions filled in; a path exim
    or rspamd would still expand at run time is not read)."""
    paths = [s.key_path_for(d) for s in signers for d in domains if s.domain in (None, d) or "$" in (s.domain or "")]
    return list(dict.fromkeys(p for p in paths if p and "$" not in p and p.startswith("/")))


def read(results: Results, domains: Sequence[str]) -> HostSigners:
    configured = _configured(results)
    if configured is None:
        return HostSigners()
    keys, errors = {}, {}
    for path in key_paths(configured, domains):
        r = results.get(pubkey_argv(path))
        if r is not None and r.ok and "BEGIN PUBLIC KEY" in r.stdout:
            keys[path] = r.stdout.encode()
        else:
            errors[path] = _why(r)
    signers = [s for s in configured if s.software != "rspamd"]
    signers += [replace(s, domain=d) for s in configured if s.software == "rspamd" for d in domains
                if s.domain in (None, d) and s.key_path_for(d) in keys]
    return HostSigners(signers, keys, {p: e for p, e in errors.items() if p in _strict_paths(signers, domains)})


def _strict_paths(signers: list[Signer], domains: Sequence[str]) -> set[str]:
    return set(key_paths([s for s in signers if s.software != "rspamd"], domains))


def _configured(results: Results) -> list[Signer] | None:
    """Every signer the configuration names; None when none of it could be read."""
    cfg = mta_config.read_mta_config(results)
    read_any = cfg.exim is not None or any(
        (r := results.get(argv)) is not None and r.exit_status is not None for argv in (OPENDKIM_CONF, *RSPAMD_CONFS))
    if not read_any:
        return None
    out = exim_signers((t.name, t.options) for t in cfg.exim.smtp_transports) if cfg.exim else []
    conf = _text(results, OPENDKIM_CONF)
    if conf:
        tables = [_text(results, ("cat", p)) or None for p in opendkim_tables(conf)]
        out += opendkim_signers(conf, *(tables + [None, None])[:2], source=OPENDKIM_CONF[1])
    for argv in RSPAMD_CONFS:
        if found := rspamd_signers(_text(results, argv), source=argv[1]):
            out += found
            break
    return out


def _text(results: Results, argv: tuple[str, ...]) -> str:
    r = results.get(argv)
    return r.stdout if r is not None and r.ok else ""


def _why(r: CommandResult | None) -> str:
    if r is None:
        return "not read (the commands did not run)"
    if r.missing:
        return "openssl is not installed on the host, so its public key cannot be derived there"
    if r.timed_out:
        return "reading it timed out"
    first = (r.stderr.strip().splitlines() or ["no key in the file"])[0]
    return "no such file" if "No such file" in r.stderr else first[:160]
