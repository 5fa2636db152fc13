"""The services step's findings about ports: containers, nat forwarding, loopback-only and
missing services, each explained by the MTA's own configuration where it can be."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.checks import mta_config, mta_fixes
from bot.checks.base import CheckInput
from bot.checks.catalogue import finding
from bot.checks.containers import Containers, restart_fix
from bot.checks.parse import MTA
from bot.checks.served import Served, to_this_host
from bot.firewall.model import Packet
from bot.models import INBOUND_PORTS, Finding, Fix, PortKey

ROLE = {25: "mta", 465: "mta", 587: "mta", 143: "imap", 993: "imap"}


def label(keys: Iterable[PortKey]) -> str:
    """'25, 587 (IPv4, IPv6)'."""
    keys = list(keys)
    ports = ", ".join(map(str, sorted({k.port for k in keys})))
    fams = ", ".join("IPv6" if f == "ipv6" else "IPv4" for f in sorted({k.family for k in keys}))
    return f"{ports} ({fams})"


def _group(items: Iterable[tuple[str, PortKey]]) -> dict[str, list[PortKey]]:
    out: dict[str, list[PortKey]] = {}
    for group, key in items:
        out.setdefault(group, []).append(key)
    return out


def container_findings(served: Mapping[PortKey, Served], box: Containers) -> tuple[list[Finding], list[Fix]]:
    """Ports served by a (named) container, forwarded by a nat rule, or published by a
    container that is not running (with its restart through the engine)."""
    findings = []
    by_id = {c.id: c for c in box.containers}
    live = {k: s for k, s in served.items() if s.listening in ("public", "forwarded")}
    for cid, keys in _group((s.container.id, k) for k, s in live.items() if s.container).items():
        s = live[keys[0]]
        via = s.proxy or (f"nat rule {s.nat.nat_by}" if s.nat else "?")
        findings.append(finding("service.container", f"Port(s) {label(keys)} are served by container "
                                f"{by_id[cid].describe()}, through {via}",
                                evidence=f"{by_id[cid].engine} inspect: {by_id[cid].describe()}", ports=keys))
    for proxy, keys in _group((s.proxy, k) for k, s in live.items() if s.proxy and not s.container).items():
        why = ("a rootless container belongs to an unprivileged user: `podman ps` run as that user "
               "names it" if "rootless" in proxy else
               "; ".join(box.notes) or "no container of docker or podman publishes it")
        findings.append(finding("service.container", f"Port(s) {label(keys)} are held by {proxy} for a "
                                f"container that mailcheck could not name ({why})",
                                evidence=f"{live[keys[0]].process}; {why}", ports=keys))
    for where, keys in _group((_target(s.nat), k) for k, s in live.items() if s.nat and not s.container).items():
        rules = "\n".join(dict.fromkeys(live[k].nat.nat_by or "" for k in keys))
        findings.append(finding("service.forwarded", f"No process of the host listens on port(s) "
                                f"{label(keys)}: nat rules forward them to {where}", evidence=rules,
                                ports=keys))
    stopped = _stopped(served, box)
    return findings + [f for f, _ in stopped], [x for _, x in stopped]


def _target(nat: Packet) -> str:
    return "local port(s) of the host (REDIRECT)" if to_this_host(nat) else nat.daddr


def _stopped(served: Mapping[PortKey, Served], box: Containers) -> list[tuple[Finding, Fix]]:
    out = []
    for c in box.containers:
        keys = [k for k, s in served.items() if not c.running and c.publishes(k.port, k.family)
                and s.listening not in ("public", "forwarded")]
        if keys:
            fix = restart_fix(c, keys)
            sev = "error" if any(k.port == 25 for k in keys) else "warning"
            out.append((finding("service.container_down", f"Container {c.describe()} publishes "
                                f"port(s) {label(keys)} but is not running: nothing serves them",
                                evidence=f"{c.engine} inspect: {c.describe()}", severity=sev,
                                fixes=[fix.id], ports=keys), fix))
    return out


def stopped_ports(served: Mapping[PortKey, Served], box: Containers) -> set[int]:
    return {k.port for c in box.containers if not c.running
            for k in served if c.publishes(k.port, k.family)}


def port_findings(inp: CheckInput, served: Mapping[PortKey, Served], down_roles: set[str],
                  box: Containers, args: Mapping[int, str]) -> tuple[list[Finding], list[Fix]]:
    """Loopback-only and missing services, explained by the daemon's own configuration."""
    cfg = mta_config.read_mta_config(inp.results)
    host = mta_fixes.HostView(inp.facts.distro_family, inp.facts.systemd,
                              any(a.family == "ipv6" for a in inp.facts.addresses), _daemon_args(served, args))
    families = sorted({k.family for k in served})
    findings, fixes = [], []
    for port in INBOUND_PORTS:
        mine = {k: s for k, s in served.items() if k.port == port}
        states = {s.listening for s in mine.values()}
        if port in stopped_ports(served, box):
            continue
        if states & {"public", "forwarded"}:
            ex, gap = _family_gap(mine, cfg, inp, host)
            if gap:
                findings.append(gap)
            else:
                continue
        elif "loopback" in states:
            daemon = next((s.daemon for s in mine.values() if s.daemon), None)
            ex = _loopback(daemon, port, cfg, inp, served, host)
            lines = "\n".join(f"{s.process or '?'} on loopback ({k.label})" for k, s in mine.items()
                              if s.listening == "loopback")
            findings.append(finding("service.loopback_only", f"Port {port} listens on loopback only: "
                                    f"nothing outside can connect ({ex.why})" if ex else
                                    f"Port {port} listens on loopback only: nothing outside can connect",
                                    evidence=lines, severity="error" if port == 25 else "warning",
                                    fixes=[ex.fix.id] if ex and ex.fix else [], ports=list(mine)))
        elif ROLE[port] not in down_roles:
            ex = _missing(port, cfg, inp, served, host, families)
            findings.append(finding("service.not_listening", f"Nothing listens on port {port}"
                                    + (f" ({ex.why})" if ex else ""), evidence="(no listener)",
                                    severity="error" if port == 25 else None,
                                    fixes=[ex.fix.id] if ex and ex.fix else [], ports=list(mine)))
        else:
            continue
        if ex and ex.fix and ex.fix.id not in {f.id for f in fixes}:
            fixes.append(ex.fix)
    return findings, fixes


def config_lines(inp: CheckInput) -> list[str]:
    """The MTA's own view of its ports, for the evidence: Postfix's inet services in master.cf
    (postscreen on 25 delays its banner on purpose), exim's interfaces and ports."""
    cfg = mta_config.read_mta_config(inp.results)
    lines = []
    if cfg.postfix:
        lines.append(f"postfix: inet_interfaces = {cfg.postfix.param('inet_interfaces')}, "
                     f"inet_protocols = {cfg.postfix.protocols}")
        for s in cfg.postfix.services:
            if s.type == "inet":
                opts = "".join(f" -o {k}={v}" for k, v in s.options.items())
                lines.append(f"postfix master.cf: {s.name} inet -> {s.command}{opts}")
        if any(s.command == "postscreen" for s in cfg.postfix.inet(25)):
            lines.append("port 25 is answered by Postfix's postscreen: its final 220 greeting comes "
                         f"after postscreen_greet_wait ({cfg.postfix.param('postscreen_greet_wait')}) "
                         "on purpose, after a '220-' pre-greeting")
    if cfg.exim:
        lines.append(f"exim: local_interfaces = {cfg.exim.options.get('local_interfaces', '')}, "
                     f"daemon_smtp_ports = {cfg.exim.options.get('daemon_smtp_ports', '')}, "
                     f"tls_on_connect_ports = {cfg.exim.options.get('tls_on_connect_ports', '')}")
    if cfg.dovecot:
        lines.append(f"dovecot: listen = {cfg.dovecot.params.get('listen', '')}, "
                     f"protocols = {' '.join(cfg.dovecot.protocols)}")
    return lines


def _family_gap(mine: Mapping[PortKey, Served], cfg: mta_config.MtaConfig, inp: CheckInput,
                host: mta_fixes.HostView) -> tuple[mta_fixes.Explained | None, Finding | None]:
    """A port served over one address family and not at all over the other one the host has
    (its outside probe is refused there), with the setting that says so."""
    up = [(k, s) for k, s in mine.items() if s.listening in ("public", "forwarded")]
    gaps = [k for k, s in mine.items() if s.listening == "none"]
    if not up or not gaps:
        return None, None
    k, s = up[0]
    fam = "IPv6" if k.family == "ipv6" else "IPv4"
    who = (f"container {s.container.name} ({s.container.engine})" if s.container else
           "a nat rule" if s.nat else s.process or "a container")
    ex = mta_fixes.family_gap(s.daemon, cfg, inp.results, gaps, host) if s.daemon else \
        mta_fixes.Explained(f"{who} publishes it over {fam} only")
    label = ", ".join(g.label for g in gaps)
    return ex, finding("service.not_listening", f"Nothing listens on {label} ({ex.why}); over {fam} "
                       "it is served", evidence="\n".join(f"{x.label}: {v.listening} {v.process or ''}"
                                                              for x, v in mine.items()),
                       severity="warning", fixes=[ex.fix.id] if ex.fix else [], ports=gaps)


def _daemon_args(served: Mapping[PortKey, Served], args: Mapping[int, str]) -> dict[str, str]:
    """Each daemon's command line (of the process holding one of its sockets: exim's daemon,
    Postfix's master), from `ps` by pid."""
    out: dict[str, str] = {}
    for s in served.values():
        for pid in s.pids:
            if s.daemon and s.daemon not in out and pid in args:
                out[s.daemon] = args[pid]
    return out


def _loopback(daemon: str | None, port: int, cfg: mta_config.MtaConfig, inp: CheckInput,
              served: Mapping[PortKey, Served], host: mta_fixes.HostView) -> mta_fixes.Explained | None:
    keys = [k for k, s in served.items() if s.daemon == daemon and s.listening == "loopback"]
    if daemon == "exim" and cfg.exim:
        return mta_fixes.exim_loopback(cfg.exim, inp.results, keys, host)
    if daemon == "postfix" and cfg.postfix:
        return mta_fixes.postfix_loopback(cfg.postfix, inp.results, port, keys, host)
    if daemon == "dovecot" and cfg.dovecot:
        return mta_fixes.dovecot_loopback(cfg.dovecot, inp.results, keys, host)
    return None


def _missing(port: int, cfg: mta_config.MtaConfig, inp: CheckInput, served: Mapping[PortKey, Served],
             host: mta_fixes.HostView, families: list[str]) -> mta_fixes.Explained | None:
    mta = next((s.daemon for k, s in served.items() if k.port == 25 and s.daemon in MTA), None)
    if port in (465, 587) and mta == "exim" and cfg.exim:
        missing = [p for p in (465, 587) if not any(
            s.listening in ("public", "forwarded", "loopback") for k, s in served.items() if k.port == p)]
        return mta_fixes.exim_missing(cfg.exim, inp.results, missing, families, host)
    if port in (465, 587) and mta == "postfix" and cfg.postfix:
        return mta_fixes.postfix_missing(cfg.postfix, inp.results, port, families)
    if port == 993 and cfg.dovecot and cfg.dovecot.params.get("ssl") == "no":
        return mta_fixes.Explained("dovecot's ssl = no: no IMAPS")
    return None

