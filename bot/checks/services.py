"""Guide step 2: are the mail daemons running, and who serves the mail ports?

Listeners from `ss -Hltnp` (lsof as fallback) and who holds them (bot/checks/served.py):
a daemon of the host (exim, postfix, sendmail, opensmtpd; dovecot, courier, cyrus), a
container through its engine (docker-proxy, conmon, rootlessport, slirp4netns, pasta,
named by `docker`/`podman`), or, with no listener, a nat rule forwarding the port. Service
state from `systemctl status` where systemd runs (Postfix: its postfix@- instance), from
the listeners where it does not. A down daemon's evidence is its own log
(bot/checks/daemon_logs.py). The MTA's own configuration says why a port is loopback-only
or missing, with an exact fix where there is one (bot/checks/mta_fixes.py).
"""

from __future__ import annotations

from bot import firewall
from bot.checks import containers as engines
from bot.checks import daemon_logs, mta_config
from bot.checks.base import Check, CheckContext, CheckInput, Results, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.parse import (
    MTA,
    Listener,
    daemon_of,
    listener_daemon,
    parse_lsof,
    parse_ps,
    parse_ss,
)
from bot.checks.parse import parse_systemctl_status as parse_units
from bot.checks.served import Served, serve_map
from bot.checks.service_findings import config_lines, container_findings, port_findings
from bot.checks.units import restart_command, state_units, unit_name
from bot.models import (
    INBOUND_PORTS,
    BackupSpec,
    Command,
    Finding,
    Fix,
    PortKey,
    PortUpdate,
    Precondition,
)

SS = ("ss", "-Hltnp")
LSOF = ("lsof", "-nP", "-iTCP", "-sTCP:LISTEN")
PS = ("ps", "-eo", "pid=,comm=,args=")
BINARIES = {  # a daemon is installed when one of its programs exists
    "exim": ("/usr/sbin/exim4", "/usr/sbin/exim"),
    "postfix": ("/usr/sbin/postfix",),
    "opensmtpd": ("/usr/sbin/smtpd",),
    "sendmail": ("/usr/sbin/sendmail.sendmail",),
    "dovecot": ("/usr/sbin/dovecot",),
    "courier": ("/usr/sbin/couriertcpd",),
    "cyrus": ("/usr/sbin/cyrmaster", "/usr/lib/cyrus/bin/master"),
}
INSTALLED = ("ls", "-1d", *(p for paths in BINARIES.values() for p in paths))
ALL_UNITS = ("exim4", "exim", "postfix@-", "postfix", "opensmtpd", "sendmail", "dovecot",
             "courier-imap", "cyrus-imapd")
SYSTEMCTL = ("systemctl", "status", "--no-pager", "--lines=0", *(f"{u}.service" for u in ALL_UNITS))
ROLE_PORTS = {"mta": (25, 465, 587), "imap": (143, 993)}


def role_of(daemon: str) -> str:
    return "mta" if daemon in MTA else "imap"


def listeners(results: Results) -> tuple[list[Listener] | None, str]:
    """(listeners, source): from ss, else lsof; None when neither could run."""
    ss = results.get(SS)
    if ss is not None and ss.ok:
        return parse_ss(ss.stdout), "ss -Hltnp"
    lsof = results.get(LSOF)
    if lsof is not None and lsof.exit_status in (0, 1) and not lsof.stderr.strip():
        return parse_lsof(lsof.stdout), "lsof -nP -iTCP -sTCP:LISTEN"  # lsof exits 1 on no match
    return None, _why_not(ss, "ss") + "; " + _why_not(lsof, "lsof")


def _why_not(r, name: str) -> str:
    if r is None:
        return f"{name}: not run"
    if r.missing:
        return f"{name}: not installed"
    if r.timed_out:
        return f"{name}: timed out"
    return f"{name}: exit {r.exit_status} {r.stderr.strip()[:120]}"


def installed(results: Results) -> list[str]:
    r = results.get(INSTALLED)
    present = set(r.stdout.split()) if r is not None else set()
    return [d for d, paths in BINARIES.items() if present & set(paths)]


def running(inp: CheckInput, daemons: list[str], found: list[Listener] | None,
            args: dict[int, str]) -> dict[str, tuple[bool, str]]:
    """daemon -> (running, evidence line).

    systemd: the unit's Active state (Postfix: postfix@-, Debian's instance; its postfix.service
    is a oneshot that stays "active (exited)"). Otherwise a daemon runs when one of its
    processes holds a listening socket on this host (ss/lsof), or, when no listing could be
    read, when `ps` shows one (ps alone can see processes of other network namespaces sharing
    the pid space).
    """
    procs = parse_ps(r.stdout) if (r := inp.results.get(PS)) is not None and r.ok else []
    units = {}
    if inp.facts.systemd and (r := inp.results.get(SYSTEMCTL)) is not None:
        units = parse_units(r.stdout)
    listening = {listener_daemon(x, args) for x in found or []}
    out = {}
    for d in daemons:
        unit = next((u for name in state_units(d, inp.facts.distro_family)
                     if (u := units.get(f"{name}.service")) and u.loaded not in ("", "not-found")), None)
        if unit is not None:
            out[d] = (unit.running, f"{unit.unit}: Active: {unit.active} ({unit.sub})")
            continue
        pids = [p for p in procs if daemon_of(p.comm, p.args) == d]
        if found is not None:
            ok = d in listening
            line = f"{d}: listening" if ok else f"{d}: no process of it listens on this host"
        else:
            ok = bool(pids)
            line = f"{d}: process {pids[0].pid} {pids[0].args[:80]}" if pids else f"{d}: no process"
        out[d] = (ok, line)
    return out


def restart_fix(daemon: str, inp: CheckInput) -> Fix:
    unit = unit_name(daemon, inp.facts.distro_family)
    cmd = restart_command(daemon, inp.facts.distro_family, inp.facts.systemd)
    if inp.facts.systemd:  # the unit that says whether it runs (Postfix: postfix@-)
        down = ["systemctl", "is-active", "--quiet", f"{state_units(daemon, inp.facts.distro_family)[0]}.service"]
    else:
        down = [f"/etc/init.d/{unit}", "status"]
    still_down = Precondition(argv=down, expect_exit=None, expect_failure=True,
                              description=f"{unit} is still down (nobody restarted it meanwhile)")
    return Fix(id=f"service-restart-{unit}", kind="service", summary=f"Restart {unit}",
               label=f"Restart {unit}", commands=[cmd], rollback=[],
               backend="systemd" if inp.facts.systemd else "sysvinit", findings=["service.down"],
               preconditions=[still_down], backup=BackupSpec())


class Services(Check):
    name = "services"
    ssh = "required"

    def commands(self, ctx: CheckContext) -> list[Command]:
        cmds = [Command(SS), Command(LSOF), Command(PS), Command(INSTALLED, timeout=5),
                Command(SYSTEMCTL)]
        return [*cmds, *daemon_logs.commands(ctx.facts.systemd), *engines.commands(),
                *mta_config.commands(), *firewall.collect_commands(ctx.results)]  # nat rules, routes

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        found, source = listeners(inp.results)
        args = {p.pid: p.args for p in parse_ps(r.stdout)} if (r := inp.results.get(PS)) and r.ok else {}
        daemons = installed(inp.results)
        state = running(inp, daemons, found, args)
        evidence = [f"daemons installed: {', '.join(daemons) or 'none found'}"]
        if found is None:
            findings, fixes = _down_findings(inp, state, {}, engines.Containers())
            f = finding("service.unknown", f"Cannot tell who listens on the mail ports ({source})",
                        evidence=source, ports=_keys(INBOUND_PORTS, _families(inp)))
            return StepOutcome("error", "neither ss nor lsof could list listeners",
                               "\n".join([*evidence, *(line for _, line in state.values()), source]),
                               findings + [f], fixes, error=f"neither ss nor lsof could run: {source}")
        box = engines.read_containers(inp.results)
        served = serve_map(inp, found, args, box, _families(inp))
        findings, fixes = _down_findings(inp, state, served, box)
        elsewhere = {d: served_elsewhere(d, served, box) for d in state}
        down = {role_of(d) for d, (ok, _) in state.items() if not ok and elsewhere[d] is None}
        for more, extra in (container_findings(served, box), port_findings(inp, served, down, box, args)):
            findings += more
            fixes += [f for f in extra if f.id not in {x.id for x in fixes}]
        ports = {k: PortUpdate(listening=s.listening, process=s.process) for k, s in served.items()}
        evidence += [line + (f" (its role is served by {elsewhere[d]})" if not ok and elsewhere[d] else "")
                     for d, (ok, line) in state.items()] + [f"$ {source}"]
        evidence += [f"{','.join(x.names) or '?'} {x.address}:{x.port}" for x in found
                     if x.port in ROLE_PORTS["mta"] + ROLE_PORTS["imap"]]
        evidence += [f"containers: {c.describe()}" for c in box.containers] + list(box.notes)
        evidence += config_lines(inp)
        return StepOutcome(status_of(findings), _summary(served, state, elsewhere), "\n".join(evidence),
                           findings, fixes, ports)


def _families(inp: CheckInput) -> list[str]:
    return ["ipv4"] + (["ipv6"] if any(k[1] == "ipv6" for k in inp.ports) else [])


def _keys(ports, families) -> list[PortKey]:
    return [PortKey("inbound", f, p) for f in families for p in ports]


def served_elsewhere(daemon: str, served: dict[PortKey, Served], box: engines.Containers) -> str | None:
    """Who else serves the daemon's role: a container (running or not: then the container is
    what to look at) or another daemon of the role; None when nobody does."""
    ports = ROLE_PORTS[role_of(daemon)]
    for k, s in served.items():
        if k.port in ports and s.listening in ("public", "forwarded"):
            if s.by_container:
                return f"container {s.container.name}" if s.container else (s.proxy or "a nat rule")
            if s.daemon not in (None, daemon) and role_of(s.daemon) == role_of(daemon):
                return s.daemon
    return next((f"container {c.name}" for c in box.containers for p in ports
                 if c.publishes(p, "ipv4") or c.publishes(p, "ipv6")), None)


def _down_findings(inp: CheckInput, state: dict, served: dict,
                   box: engines.Containers) -> tuple[list[Finding], list[Fix]]:
    findings, fixes = [], []
    for d, (ok, line) in state.items():
        if ok or served_elsewhere(d, served, box) is not None:
            continue  # e.g. the host's exim is stopped while a container serves SMTP
        fix = restart_fix(d, inp)
        fixes.append(fix)
        role = "SMTP (25, 465, 587)" if d in MTA else "IMAP (143, 993)"
        logs = daemon_logs.evidence(d, inp.results, inp.facts.systemd)
        findings.append(finding("service.down", f"{d} is installed but not running: no {role}",
                                evidence=f"{line}\n{logs}", fixes=[fix.id],
                                ports=_keys(ROLE_PORTS[role_of(d)], _families(inp))))
    return findings, fixes


def _summary(served: dict[PortKey, Served], state: dict, elsewhere: dict[str, str | None]) -> str:
    down = [d for d, (ok, _) in state.items() if ok is False and elsewhere[d] is None]
    public = sorted({k.port for k, s in served.items() if s.listening == "public"})
    parts = [f"listening publicly on {', '.join(map(str, public)) or 'no mail port'}"]
    forwarded = sorted({k.port for k, s in served.items() if s.listening == "forwarded"})
    if forwarded:
        parts.append(f"forwarded by nat: {', '.join(map(str, forwarded))}")
    if down:
        parts.append(f"down: {', '.join(down)}")
    return "; ".join(parts)
