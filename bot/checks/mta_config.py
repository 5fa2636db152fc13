"""The mail daemons' own configuration, as they report it on the host.

Not a step of its own: the steps that explain what they see in the daemon's own
words (services: why a port is loopback-only; ports: why 465 speaks plain SMTP;
dns: which domains and HELO name) declare `commands()` (the engine runs each argv
once, whoever asks) and read `read_mta_config(results)`. Pure and total: output
that is missing or cannot be read gives None / empty values, never an exception.

- exim: `exim4 -bP OPTION...` (`exim -bP` on RHEL), `exim4 -bP transports` (each
  transport's options with exim's macros already substituted: DKIM signing, helo_data),
  and Debian's /etc/exim4/update-exim4.conf.conf (dc_local_interfaces & co.);
- postfix: `postconf -x PARAM...` (values with $name expanded) and `postconf -M`
  (master.cf services with their -o overrides);
- dovecot: `doveconf PARAM...`;
- the files the domain lists name (exim `lsearch;FILE` / `dsearch;DIR`, postfix
  `hash:FILE` & co.): `followup_commands(results)` asks for them once the first
  round is back.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.models import Command, CommandResult

Results = Mapping[tuple[str, ...], CommandResult]

EXIM_OPTIONS = ("primary_hostname", "qualify_domain", "local_interfaces", "daemon_smtp_ports",
                "tls_on_connect_ports", "smtp_active_hostname", "log_file_path",
                "+local_domains", "+relay_to_domains", "tls_certificate")
EXIM = {binary: (binary, "-bP", *EXIM_OPTIONS) for binary in ("exim4", "exim")}
EXIM_TRANSPORTS = {binary: (binary, "-bP", "transports") for binary in ("exim4", "exim")}
DEBIAN_EXIM_CONF = "/etc/exim4/update-exim4.conf.conf"
EXIM_DEBCONF = ("cat", DEBIAN_EXIM_CONF)
# Debian's place for local main-section settings: exim4.conf.localmacros (non-split config)
# or conf.d/main/000_localmacros (split); update-exim4.conf puts it first in the config.
LOCALMACROS = {False: "/etc/exim4/exim4.conf.localmacros", True: "/etc/exim4/conf.d/main/000_localmacros"}
EXIM_LOCALMACROS = {split: ("cat", path) for split, path in LOCALMACROS.items()}
POSTFIX_PARAMS = ("myhostname", "mydomain", "myorigin", "mydestination", "virtual_mailbox_domains",
                  "virtual_alias_domains", "relay_domains", "inet_interfaces", "inet_protocols",
                  "smtp_helo_name", "smtpd_banner", "maillog_file", "smtpd_tls_wrappermode",
                  "config_directory", "smtpd_tls_cert_file", "smtpd_tls_chain_files",
                  "postscreen_greet_wait")
POSTCONF = ("postconf", "-x", *POSTFIX_PARAMS)
POSTCONF_MASTER = ("postconf", "-M")
DOVECOT_PARAMS = ("listen", "protocols", "log_path", "info_log_path", "ssl")
DOVECONF = ("doveconf", *DOVECOT_PARAMS)
SERVICE_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "urd": 465,
                 "imap": 143, "imap2": 143, "imaps": 993}


def commands() -> list[Command]:
    """Read-only; each exits 127 where its daemon is not installed."""
    lang = (("LANG", "C"),)
    return [Command(argv, timeout=10, env=lang)
            for argv in (*EXIM.values(), *EXIM_TRANSPORTS.values(), EXIM_DEBCONF,
                         *EXIM_LOCALMACROS.values(), POSTCONF, POSTCONF_MASTER, DOVECONF)]


def followup_commands(results: Results) -> list[Command]:
    """Reading the lookup files the domain lists name (none until the first round is in)."""
    cfg = read_mta_config(results)
    files = [*(cfg.exim.domain_files if cfg.exim else []), *(cfg.postfix.domain_files if cfg.postfix else [])]
    return [Command(argv, timeout=10) for argv in dict.fromkeys(table_argv(kind, path) for kind, path in files)]


def table_argv(kind: str, path: str) -> tuple[str, ...]:
    """The read-only command that lists a lookup table's keys."""
    if kind == "dsearch":
        return ("ls", "-1", path)
    if kind in ("lsearch", "texthash"):
        return ("cat", path)
    return ("postmap", "-s", f"{kind}:{path}")


def table_keys(text: str) -> list[str]:
    """The keys of an lsearch / postmap -s / ls listing: each line's first word."""
    return [line.split()[0].rstrip(":") for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def parse_settings(text: str) -> dict[str, str]:
    """'name = value' lines (exim -bP, postconf, doveconf); exim's named lists keep their
    kind: 'domainlist local_domains = @' -> {'local_domains': '@'}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        words = name.split()
        if sep and words:
            out[words[-1]] = value.strip()
    return out


def parse_debconf(text: str) -> dict[str, str]:
    """Debian's update-exim4.conf.conf: shell assignments dc_NAME='value'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.isidentifier() and not line.lstrip().startswith("#"):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            out[name] = " ".join(words)
    return out


def exim_list(value: str) -> list[str]:
    """An exim list: ':'-separated ('::' is a literal colon), or '<;' / '<SEP' to change it."""
    value = value.strip()
    sep = ":"
    if value.startswith("<") and len(value) > 1 and not value[1].isspace():
        sep, value = value[1], value[2:]
    if sep == ":":
        items = value.replace("::", "\0").split(":")
        items = [i.replace("\0", ":") for i in items]
    else:
        items = value.split(sep)
    return [i.strip() for i in items if i.strip()]


def port_number(text: str) -> int | None:
    text = text.strip()
    if text.isdigit():
        return int(text)
    return SERVICE_PORTS.get(text)


@dataclass(frozen=True)
class Interface:
    """An address a daemon is told to listen on, and its port when the entry names one."""

    address: str  # '*' for every address
    port: int | None = None

    @property
    def loopback(self) -> bool:
        return self.address in ("127.0.0.1", "::1", "localhost", "loopback-only") or \
            self.address.startswith("127.")


def exim_interface(entry: str) -> Interface:
    """'127.0.0.1', '0.0.0.0.25', '[::0]:587', '::0.25', '<; ...' items -> Interface."""
    entry = entry.strip()
    if entry.startswith("["):
        addr, _, rest = entry[1:].partition("]")
        return Interface(_any(addr), port_number(rest.lstrip(":.")) if rest else None)
    dotted = entry.rsplit(".", 1)
    if len(dotted) == 2 and dotted[1].isdigit() and (entry.count(".") == 4 or ":" in dotted[0]):
        return Interface(_any(dotted[0]), int(dotted[1]))
    return Interface(_any(entry))


def _any(addr: str) -> str:
    return "*" if addr in ("0.0.0.0", "::0", "::", "*", "") else addr


@dataclass(frozen=True)
class Transport:
    """One exim transport as `exim -bP transports` prints it (macros substituted)."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def driver(self) -> str:
        return self.options.get("driver", "")


def parse_transports(text: str) -> list[Transport]:
    """'NAME transport:' blocks of 'option = value' lines (flags 'no_x' / 'x' skipped)."""
    out: list[Transport] = []
    for line in text.splitlines():
        if line.endswith(" transport:") and " " not in line[:-len(" transport:")]:
            out.append(Transport(line[:-len(" transport:")]))
        elif out and "=" in line:
            name, _, value = line.partition("=")
            out[-1].options[name.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class EximConfig:
    options: dict[str, str]
    debconf: dict[str, str] | None = None  # Debian's dc_* settings, when the file exists
    localmacros: str | None = None  # Debian's local macros file (LOCALMACROS), when it exists
    transports: tuple[Transport, ...] = ()
    tables: dict[tuple[str, ...], str] = field(default_factory=dict)  # lookup file argv -> output

    @property
    def binary(self) -> str:
        return self.options.get("_binary", "exim4")

    @property
    def localmacros_path(self) -> str | None:
        """Debian's local macros file for this config layout (None: not Debian's exim)."""
        if self.debconf is None:
            return None
        return LOCALMACROS[self.debconf.get("dc_use_split_config", "false") == "true"]

    @property
    def tls_certificate(self) -> str | None:
        return self.options.get("tls_certificate") or None

    @property
    def interfaces(self) -> list[Interface]:
        """local_interfaces; empty means every address (exim's default)."""
        return [exim_interface(i) for i in exim_list(self.options.get("local_interfaces", ""))]

    @property
    def smtp_ports(self) -> list[int]:
        ports = [port_number(p) for p in exim_list(self.options.get("daemon_smtp_ports", "smtp"))]
        return [p for p in ports if p is not None]

    @property
    def tls_on_connect_ports(self) -> list[int]:
        ports = [port_number(p) for p in exim_list(self.options.get("tls_on_connect_ports", ""))]
        return [p for p in ports if p is not None]

    @property
    def primary_hostname(self) -> str | None:
        return self.options.get("primary_hostname") or None

    @property
    def smtp_transports(self) -> list[Transport]:
        return [t for t in self.transports if t.driver == "smtp"]

    @property
    def helo_name(self) -> str | None:
        """The name exim says HELO with: the smtp transports' helo_data (default
        $primary_hostname); None when it is computed at delivery time (e.g. from DNS)."""
        data = {t.options.get("helo_data", "$primary_hostname") or "$primary_hostname"
                for t in self.smtp_transports} or {"$primary_hostname"}
        if data == {"$primary_hostname"}:
            return self.primary_hostname
        return data.pop() if len(data) == 1 and "$" not in next(iter(data)) else None

    @property
    def named_domains(self) -> list[tuple[str, str]]:
        """(domain, the setting naming it): primary_hostname, qualify_domain, the literal
        local domains ('@' and 'localhost' aside) and those of their lookup files."""
        named = [(self.options.get("primary_hostname", ""), "exim primary_hostname"),
                 (self.options.get("qualify_domain", ""), "exim qualify_domain")]
        named += [(n, "exim local_domains") for n in exim_list(self.options.get("local_domains", ""))]
        named += [(k, f"exim local_domains {kind};{path}") for kind, path in self.domain_files
                  for k in table_keys(self.tables.get(table_argv(kind, path), ""))]
        return _named(named)

    @property
    def domain_files(self) -> list[tuple[str, str]]:
        """(lookup type, file) of the local_domains entries that are file lookups."""
        out = []
        for item in exim_list(self.options.get("local_domains", "")):
            kind, sep, path = item.partition(";")
            kind = kind.strip().removeprefix("partial-")
            if sep and kind in ("lsearch", "dsearch") and path.strip().startswith("/"):
                out.append((kind, path.strip()))
        return out

    @property
    def domains(self) -> list[str]:
        return [d for d, _ in self.named_domains]


@dataclass(frozen=True)
class MasterService:
    """One master.cf line as `postconf -M` prints it."""

    name: str
    type: str
    command: str
    options: dict[str, str] = field(default_factory=dict)  # its -o overrides
    chroot: str = "-"  # master.cf's chroot column (Debian ships y)

    @property
    def loopback(self) -> bool:
        """A service bound to a loopback address in master.cf ('127.0.0.1:submission')."""
        host = self.name.rpartition(":")[0].strip("[]")
        return bool(host) and Interface(host).loopback

    @property
    def port(self) -> int | None:
        """The port of an inet service ('smtp', '587', '127.0.0.1:smtp' -> 25)."""
        if self.type != "inet":
            return None
        return port_number(self.name.rpartition(":")[2])


def parse_master(text: str) -> list[MasterService]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 8 or line[:1].isspace() or line.startswith("#"):
            continue
        args = words[8:]
        opts = {}
        for i, w in enumerate(args[:-1]):
            if w == "-o":
                k, _, v = args[i + 1].partition("=")
                opts[k] = v
        out.append(MasterService(words[0], words[1], words[7], opts, words[4]))
    return out


POSTFIX_DOMAIN_PARAMS = ("myhostname", "mydomain", "mydestination", "virtual_mailbox_domains",
                         "virtual_alias_domains")
POSTFIX_FILE_MAPS = ("hash", "lmdb", "btree", "cdb", "dbm", "texthash")


@dataclass(frozen=True)
class PostfixConfig:
    params: dict[str, str]
    services: tuple[MasterService, ...] = ()
    tables: dict[tuple[str, ...], str] = field(default_factory=dict)  # lookup file argv -> output

    @property
    def interfaces(self) -> list[Interface]:
        """inet_interfaces: 'all' -> [*], 'loopback-only', or addresses."""
        items = self.params.get("inet_interfaces", "all").replace(",", " ").split()
        return [Interface("*" if i == "all" else i) for i in items] or [Interface("*")]

    @property
    def protocols(self) -> str:
        return self.params.get("inet_protocols", "all")

    def param(self, name: str) -> str:
        return self.params.get(name, "")

    def inet(self, port: int) -> list[MasterService]:
        """The master.cf inet services on this port (smtpd or postscreen)."""
        return [s for s in self.services if s.port == port]

    @property
    def helo_name(self) -> str | None:
        return self.params.get("smtp_helo_name") or self.params.get("myhostname") or None

    def _items(self, param: str) -> list[str]:
        return self.params.get(param, "").replace(",", " ").split()

    @property
    def named_domains(self) -> list[tuple[str, str]]:
        """(domain, the parameter naming it), with the keys of the file maps they name."""
        named = [(n, f"postfix {p}") for p in POSTFIX_DOMAIN_PARAMS for n in self._items(p)]
        named += [(k, f"postfix {p} {kind}:{path}") for p in POSTFIX_DOMAIN_PARAMS
                  for kind, path in self._files(p)
                  for k in table_keys(self.tables.get(table_argv(kind, path), ""))]
        return _named(named)

    def _files(self, param: str) -> list[tuple[str, str]]:
        return [(kind, path) for kind, _, path in (i.partition(":") for i in self._items(param))
                if kind in POSTFIX_FILE_MAPS and path.startswith("/")]

    @property
    def domain_files(self) -> list[tuple[str, str]]:
        return [f for p in POSTFIX_DOMAIN_PARAMS for f in self._files(p)]

    @property
    def domains(self) -> list[str]:
        return [d for d, _ in self.named_domains]


@dataclass(frozen=True)
class DovecotConfig:
    params: dict[str, str]

    @property
    def interfaces(self) -> list[Interface]:
        items = self.params.get("listen", "*, ::").replace(",", " ").split()
        return [Interface(_any(i)) for i in items]

    @property
    def protocols(self) -> list[str]:
        return self.params.get("protocols", "").split()

    @property
    def log_path(self) -> str | None:
        return self.params.get("log_path") or None


@dataclass(frozen=True)
class MtaConfig:
    exim: EximConfig | None = None
    postfix: PostfixConfig | None = None
    dovecot: DovecotConfig | None = None

    @property
    def helo_name(self) -> str | None:
        return (self.postfix and self.postfix.helo_name) or (self.exim and self.exim.helo_name)

    @property
    def named_domains(self) -> list[tuple[str, str]]:
        """(domain, where the MTA names it), exim's first."""
        return _named([*(self.exim.named_domains if self.exim else []),
                       *(self.postfix.named_domains if self.postfix else [])])

    @property
    def domains(self) -> list[str]:
        return [d for d, _ in self.named_domains]


def _ok(results: Results, argv: tuple[str, ...]) -> str | None:
    r = results.get(argv)
    # exim -bP exits 1 when one option is unknown (e.g. a list that is not defined) but
    # still prints the others; anything that printed settings counts.
    if r is None or r.exit_status in (None, 126, 127) or r.timed_out:
        return None
    return r.stdout if r.stdout.strip() else None


def _settings(results: Results, argv: tuple[str, ...]) -> dict[str, str] | None:
    """The 'name = value' settings a command printed; None when it printed none."""
    text = _ok(results, argv)
    return (parse_settings(text) or None) if text is not None else None


def read_mta_config(results: Results) -> MtaConfig:
    tables = {argv: r.stdout for argv, r in results.items() if _ok(results, argv) is not None}
    exim = None
    for binary, argv in EXIM.items():
        if (options := _settings(results, argv)) is not None:
            deb = _ok(results, EXIM_DEBCONF)
            debconf = parse_debconf(deb) if deb is not None else None
            split = bool(debconf) and debconf.get("dc_use_split_config") == "true"
            macros = results.get(EXIM_LOCALMACROS[split])
            transports = parse_transports(_ok(results, EXIM_TRANSPORTS[binary]) or "")
            exim = EximConfig({**options, "_binary": binary}, debconf,
                              macros.stdout if macros is not None and macros.ok else None,
                              tuple(transports), tables)
            break
    postfix = None
    if (params := _settings(results, POSTCONF)) is not None:
        master = _ok(results, POSTCONF_MASTER)
        postfix = PostfixConfig(params, tuple(parse_master(master or "")), tables)
    dovecot = DovecotConfig(params) if (params := _settings(results, DOVECONF)) else None
    return MtaConfig(exim, postfix, dovecot)


def _named(pairs) -> list[tuple[str, str]]:
    """Mail domains only (a dot, no lookup or expansion, not localhost), each once with
    the first source naming it."""
    out: dict[str, str] = {}
    for name, source in pairs:
        n = name.strip().lower().rstrip(".")
        if ("." in n and n not in out and not n.startswith(("+", "/", "$", "!", "*", "localhost"))
                and not any(c in n for c in ";:${}[] ")):
            out[n] = source
    return list(out.items())
