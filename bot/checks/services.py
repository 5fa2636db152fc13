"""Guide step 2: are the mail daemons running, and who listens on the mail ports?

Listeners from `ss -Hltnp` (lsof as fallback); the daemon behind each
(exim, postfix, sendmail, opensmtpd; dovecot, courier, cyrus); public or
loopback only. Service state from `systemctl status` where systemd runs,
from the process list where it does not; the last log lines when a daemon
is down; a restart fix for it.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckContext, CheckInput, Results, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.parse import (
    MTA,
    Listener,
    daemon_of,
    parse_lsof,
    parse_ps,
    parse_ss,
    parse_systemctl_status,
)
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
UNITS = {  # (daemon, distro family) -> unit / init script name
    ("exim", "debian"): "exim4", ("exim", "rhel"): "exim", ("exim", "unknown"): "exim4",
}
DEFAULT_UNIT = {"postfix": "postfix", "opensmtpd": "opensmtpd", "sendmail": "sendmail",
                "dovecot": "dovecot", "courier": "courier-imap", "cyrus": "cyrus-imapd"}
ALL_UNITS = ("exim4", "exim", "postfix", "opensmtpd", "sendmail", "dovecot", "courier-imap",
             "cyrus-imapd")
SYSTEMCTL = ("systemctl", "status", "--no-pager", "--lines=0", *(f"{u}.service" for u in ALL_UNITS))
LOGS = ("/var/log/exim4/mainlog", "/var/log/exim/main.log", "/var/log/maillog",
        "/var/log/mail.log", "/var/log/mail.err")
JOURNAL = ("journalctl", "--no-pager", "-n", "20", *(w for u in ALL_UNITS for w in ("-u", u)))
PORT_ROLE = {25: "mta", 465: "mta", 587: "mta", 143: "imap", 993: "imap"}


def unit_name(daemon: str, distro_family: str) -> str:
    return UNITS.get((daemon, distro_family)) or DEFAULT_UNIT.get(daemon, daemon)


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


def running(inp: CheckInput, daemons: list[str], found: list[Listener] | None) -> dict[str, tuple[bool, str]]:
    """daemon -> (running, evidence line).

    systemd: the unit's Active state. Otherwise a daemon runs when one of its
    processes holds a listening socket on this host (ss/lsof), or, when no
    listing could be read, when `ps` shows one (ps alone can see processes of
    other network namespaces sharing the pid space).
    """
    procs = parse_ps(r.stdout) if (r := inp.results.get(PS)) is not None and r.ok else []
    units = {}
    if inp.facts.systemd and (r := inp.results.get(SYSTEMCTL)) is not None:
        units = parse_systemctl_status(r.stdout)
    listening = {daemon_of(x.process) for x in found or []}
    out = {}
    for d in daemons:
        unit = units.get(f"{unit_name(d, inp.facts.distro_family)}.service")
        if unit is not None and unit.loaded not in ("", "not-found"):
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
    if inp.facts.systemd:
        cmd, backend = ["systemctl", "restart", unit], "systemd"
        down = ["systemctl", "is-active", "--quiet", f"{unit}.service"]
    else:
        cmd, backend = [f"/etc/init.d/{unit}", "restart"], "sysvinit"
        down = [f"/etc/init.d/{unit}", "status"]
    still_down = Precondition(argv=down, expect_exit=None, expect_failure=True,
                              description=f"{unit} is still down (nobody restarted it meanwhile)")
    return Fix(id=f"service-restart-{unit}", kind="service", summary=f"Restart {unit}",
               label=f"Restart {unit}",
               commands=[cmd], rollback=[], backend=backend, findings=["service.down"],
               preconditions=[still_down], backup=BackupSpec())


def log_tail(results: Results, systemd: bool | None) -> str:
    parts = []
    j = results.get(JOURNAL)
    if systemd and j is not None and j.ok and j.stdout.strip():
        parts.append("$ journalctl -n 20 -u ...\n" + j.stdout.strip())
    for path in LOGS:
        r = results.get(("tail", "-n", "20", path))
        if r is not None and r.ok and r.stdout.strip():
            parts.append(f"$ tail -n 20 {path}\n" + r.stdout.strip())
    return "\n".join(parts) or "(no mail log found)"


def port_state(port: int, family: str, found: list[Listener]) -> tuple[str, str | None]:
    mine = [x for x in found if x.port == port and _serves(x, family)]
    public = [x for x in mine if not x.loopback]
    pick = public or mine
    process = ",".join(sorted({x.process for x in pick if x.process})) or None
    if public:
        return "public", process
    return ("loopback", process) if mine else ("none", None)


def _serves(x: Listener, family: str) -> bool:
    if family == "ipv6":
        return x.family in ("ipv6", "any")
    return x.family in ("ipv4", "any") or (x.family == "ipv6" and x.address == "*")


class Services(Check):
    name = "services"
    ssh = "required"

    def commands(self, ctx: CheckContext) -> list[Command]:
        cmds = [Command(SS), Command(LSOF), Command(PS), Command(INSTALLED, timeout=5),
                Command(SYSTEMCTL), Command(JOURNAL)]
        return cmds + [Command(("tail", "-n", "20", path), timeout=5) for path in LOGS]

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        found, source = listeners(inp.results)
        daemons = installed(inp.results)
        state = running(inp, daemons, found)
        findings, fixes = _down_findings(inp, state)
        down_roles = {("mta" if d in MTA else "imap") for d, (ok, _) in state.items() if not ok}
        evidence = [f"daemons installed: {', '.join(daemons) or 'none found'}",
                    *(line for _, line in state.values())]
        if found is None:
            evidence.append(source)
            f = finding("service.unknown", f"Cannot tell who listens on the mail ports ({source})",
                        evidence=source, ports=_keys(INBOUND_PORTS, _families(inp)))
            return StepOutcome("error", "neither ss nor lsof could list listeners",
                               "\n".join(evidence), findings + [f], fixes,
                               error=f"neither ss nor lsof could run: {source}")
        ports, listen = {}, {}
        for family in _families(inp):
            for port in INBOUND_PORTS:
                listening, process = port_state(port, family, found)
                ports[PortKey("inbound", family, port)] = PortUpdate(listening=listening,
                                                                     process=process)
                listen[(family, port)] = listening
        findings += _port_findings(listen, found, down_roles, _families(inp))
        evidence.append(f"$ {source}")
        evidence += [f"{x.process or '?'} {x.address}:{x.port}" for x in found
                     if x.port in INBOUND_PORTS]
        summary = _summary(listen, state)
        return StepOutcome(status_of(findings), summary, "\n".join(evidence), findings, fixes, ports)


def _families(inp: CheckInput) -> list[str]:
    return ["ipv4"] + (["ipv6"] if any(k[1] == "ipv6" for k in inp.ports) else [])


def _keys(ports, families) -> list[PortKey]:
    return [PortKey("inbound", f, p) for f in families for p in ports]


def _down_findings(inp: CheckInput, state: dict) -> tuple[list[Finding], list[Fix]]:
    findings, fixes = [], []
    logs = None
    for d, (ok, line) in state.items():
        if ok:
            continue
        logs = logs or log_tail(inp.results, inp.facts.systemd)
        fix = restart_fix(d, inp)
        fixes.append(fix)
        role = "SMTP (25, 465, 587)" if d in MTA else "IMAP (143, 993)"
        ports = [p for p, r in PORT_ROLE.items() if r == ("mta" if d in MTA else "imap")]
        findings.append(finding("service.down", f"{d} is installed but not running: no {role}",
                                evidence=f"{line}\n{logs}", fixes=[fix.id],
                                ports=_keys(ports, _families(inp))))
    return findings, fixes


def _port_findings(listen: dict, found: list[Listener], down_roles: set[str],
                   families: list[str]) -> list[Finding]:
    out = []
    for port in INBOUND_PORTS:
        keys = _keys([port], families)
        states = {listen[k] for k in listen if k[1] == port}
        lines = "\n".join(f"{x.process or '?'} {x.address}:{x.port}" for x in found if x.port == port)
        if "public" in states:
            continue
        if "loopback" in states:
            out.append(finding("service.loopback_only",
                               f"Port {port} listens on loopback only: nothing outside can connect",
                               evidence=lines, severity="error" if port == 25 else "warning",
                               ports=keys))
        elif PORT_ROLE[port] not in down_roles:
            out.append(finding("service.not_listening", f"Nothing listens on port {port}",
                               evidence="(no listener)", severity="error" if port == 25 else None,
                               ports=keys))
    return out


def _summary(listen: dict, state: dict) -> str:
    down = [d for d, (ok, _) in state.items() if not ok]
    public = sorted({p for (f, p), s in listen.items() if s == "public"})
    parts = [f"listening publicly on {', '.join(map(str, public)) or 'no mail port'}"]
    if down:
        parts.append(f"down: {', '.join(down)}")
    return "; ".join(parts)
