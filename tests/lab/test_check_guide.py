"""The guide's situations on real lab hosts: real sshd, exim, dovecot, iptables, ufw.

Each test builds the situation in a network namespace, runs the real engine
(SSH with a pinned host key, real outside probes from the root namespace) and
checks the per-port verdicts and the findings the guide would lead to.
Firewall verdicts come from the evaluator (bot/firewall): the kernel's probe and the
evaluator's verdict speak of the same packet, and the deciding rule is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.models import INBOUND_PORTS, Report
from config.inventory import Host, Inventory
from config.settings import Settings

pytestmark = pytest.mark.lab
PROBE_TIMEOUT = 1.5
MAIL_DROP = ["-p", "tcp", "-m", "multiport", "--dports", "25,143,993,587,465", "-j", "DROP"]


def host_of(lab, key: Path | None = None, known_hosts: Path | None = None) -> Host:
    return Host(name=f"mx{lab.index}", address=lab.ip, identity_file=key or lab.client_key,
                known_hosts=known_hosts or lab.known_hosts)


async def run_check(lab, **kw) -> Report:
    settings = Settings(probe_timeout=PROBE_TIMEOUT, connect_timeout=3, _env_file=None)
    return await Engine(settings, Inventory()).check(host_of(lab), **kw)


def inbound(report: Report, family: str = "ipv4") -> dict[int, tuple]:
    return {p.port: (p.outside, p.listening) for p in report.ports
            if p.direction == "inbound" and p.family == family}


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings}


def steps(report: Report) -> dict[str, str]:
    return {s.name: s.status for s in report.steps}


def firewall(report) -> dict:
    return {(p.direction, p.family, p.port): (p.firewall, p.blocked_by) for p in report.ports}


async def test_services_down(labhost):
    report = await run_check(labhost)
    assert inbound(report) == {p: ("refused", "none") for p in INBOUND_PORTS}
    assert inbound(report, "ipv6") == {p: ("refused", "none") for p in INBOUND_PORTS}
    down = sorted(f.summary.split()[0] for f in report.findings if f.code == "service.down")
    assert down == ["dovecot", "exim"]
    assert {tuple(c) for fix in report.fixes if fix.kind == "service" for c in fix.commands} == {
        ("/etc/init.d/exim4", "restart"), ("/etc/init.d/dovecot", "restart")}  # no systemd in the lab
    assert "provider.port_blocked" not in codes(report)
    assert report.exit_code == 1


async def test_exim_on_loopback_only(labhost):
    labhost.start_exim("loopback")
    labhost.start_dovecot(tls=True)
    report = await run_check(labhost)
    ports = inbound(report)
    assert ports[25] == ports[465] == ports[587] == ("refused", "loopback")
    assert ports[143] == ports[993] == ("open", "public")
    loop = sorted(int(f.summary.split()[1]) for f in report.findings if f.code == "service.loopback_only")
    assert loop == [25, 465, 587]
    assert "service.down" not in codes(report)
    assert report.exit_code == 1


async def test_nothing_on_a_port(labhost):
    labhost.start_exim("public", ports=(25, 587))
    labhost.start_dovecot(tls=True)
    report = await run_check(labhost)
    for family in ("ipv4", "ipv6"):
        ports = inbound(report, family)
        assert ports[465] == ("refused", "none")
        assert ports[25] == ports[587] == ports[143] == ports[993] == ("open", "public")
    missing = [f for f in report.findings if f.code == "service.not_listening"]
    assert [(f.summary.split(" (")[0], f.severity) for f in missing] == [("Nothing listens on port 465", "warning")]
    # exim's own configuration says why: the daemon was started with -oX, which sets its ports
    assert "the running exim was started with -oX" in missing[0].summary
    smtp = next(p for p in report.ports if p.port == 25 and p.direction == "inbound")
    assert smtp.process == "exim4" and "ESMTP" in (smtp.detail or "")
    imaps = next(p for p in report.ports if p.port == 993 and p.direction == "inbound")
    assert "self-signed" in imaps.detail and "tls.self_signed" in codes(report)
    assert report.exit_code == 0  # 465 missing is a warning: mail can flow


async def test_policy_accept_with_drop_rules(labhost):
    """The guide's case 1: INPUT and OUTPUT drop the mail ports (IPv4 only)."""
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    labhost.sh("iptables", "-A", "INPUT", *MAIL_DROP)
    labhost.sh("iptables", "-A", "OUTPUT", *MAIL_DROP)
    t0 = time.monotonic()
    report = await run_check(labhost)
    assert time.monotonic() - t0 < PROBE_TIMEOUT + 5  # probes concurrent: not one timeout per port
    assert inbound(report) == {p: ("filtered", "public") for p in INBOUND_PORTS}
    assert inbound(report, "ipv6") == {p: ("open", "public") for p in INBOUND_PORTS}
    fw = firewall(report)
    assert all(fw[("inbound", "ipv4", p)][0] == "block" for p in INBOUND_PORTS)
    assert all(fw[("outbound", "ipv4", p)][0] == "block" for p in (25, 465, 587))
    assert all(fw[("inbound", "ipv6", p)] == ("allow", None) for p in INBOUND_PORTS)
    assert "chain INPUT rule 1: -A INPUT -p tcp -m multiport --dports" in fw[("inbound", "ipv4", 25)][1]
    assert "chain OUTPUT rule 1" in fw[("outbound", "ipv4", 25)][1]
    assert {"firewall.inbound_blocked", "firewall.outbound_blocked"} <= codes(report)
    assert any(f.kind == "firewall" and f.commands[0][:4] == ["iptables", "-t", "filter", "-D"]
               for f in report.fixes)  # delete the rule by its full spec, never a line number
    assert "provider.port_blocked" not in codes(report)  # the host's own firewall drops them
    assert report.exit_code == 1


async def test_policy_drop_with_only_ssh_allowed(labhost):
    """The guide's case 2."""
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    labhost.sh("iptables", "-A", "INPUT", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT")
    labhost.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    labhost.sh("iptables", "-P", "INPUT", "DROP")
    report = await run_check(labhost)
    assert inbound(report) == {p: ("filtered", "public") for p in INBOUND_PORTS}
    assert steps(report)["services"] == "ok"  # SSH still works: the policy lets 22 in
    fw = firewall(report)
    assert all(fw[("inbound", "ipv4", p)] == ("block", "iptables -t filter: policy DROP of chain INPUT")
               for p in INBOUND_PORTS)
    assert "provider.port_blocked" not in codes(report)
    assert report.exit_code == 1


async def test_ufw_default_deny(labhost):
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    labhost.sh("sh", "-c", "ufw --force enable && ufw default deny incoming && ufw allow 22/tcp")
    report = await run_check(labhost)
    assert inbound(report) == {p: ("filtered", "public") for p in INBOUND_PORTS}
    assert inbound(report, "ipv6") == {p: ("filtered", "public") for p in INBOUND_PORTS}
    assert "ufw" in next(s.summary for s in report.steps if s.name == "firewall")
    fw = firewall(report)
    assert all(fw[("inbound", fam, p)][0] == "block" for fam in ("ipv4", "ipv6") for p in INBOUND_PORTS)
    assert fw[("inbound", "ipv4", 25)][1] == (
        "iptables -t filter: policy DROP of chain INPUT (ufw default deny (incoming))")
    assert any(f.backend == "ufw" and ["ufw", "allow", "25/tcp"] in f.commands for f in report.fixes)
    assert "provider.port_blocked" not in codes(report)
    assert report.exit_code == 1


async def test_port_dropped_outside_the_host_is_the_providers(labhost):
    """The guide's step 5: the host allows and listens, the network in between drops."""
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    labhost.provider_blocks((25, 587))
    report = await run_check(labhost)
    for family in ("ipv4", "ipv6"):
        ports = inbound(report, family)
        assert ports[25] == ports[587] == ("filtered", "public")
        assert ports[465] == ports[143] == ports[993] == ("open", "public")
    provider = [f for f in report.findings if f.code == "provider.port_blocked"]
    assert len(provider) == 2  # one per family
    assert all("25, 587" in f.summary and "ticket" in f.summary for f in provider)
    assert report.exit_code == 1


async def test_ssh_steps_report_while_a_filtered_port_still_times_out(labhost):
    """Progress is real: the SSH steps are reported as soon as their batches are back, while
    the probe of a dropped port still waits for its timeout; ports, the resolver (it ties a
    slow greeting to the resolver) and the conclusion follow it. The firewall's verdict is
    for the prober's real source address."""
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    labhost.provider_blocks((25,))
    timeout = 10.0  # well above the SSH batches, even on this busy machine (each SSH session start
    # runs root's .bashrc here: 1-3 s of CPU under load, and the local and network batches run at once)
    settings = Settings(probe_timeout=timeout, connect_timeout=3, _env_file=None)
    t0 = time.monotonic()
    at: dict[str, float] = {}

    async def progress(step, report):
        at[step.name] = time.monotonic() - t0

    report = await Engine(settings, Inventory()).check(host_of(labhost), progress=progress)
    early = {"outbound", "tools", "services", "firewall", "provider",  # outbound: off, no commands
             "reputation"}  # reputation needs neither SSH nor probes
    late = ["ports", "vantage", "resolver", "conclusion", "dns"]  # dns reads the port-25 probe (banner,
    # certificate); vantage (skipped: no vantage point) compares with the probes
    assert set(list(at)[:6]) == early and list(at)[6:] == late, at
    assert max(at[n] for n in early) < timeout <= at["ports"]
    assert [s.name for s in report.steps] == ["tools", "services", "ports", "vantage", "outbound", "resolver",
                                              "firewall", "provider", "conclusion", "dns", "reputation"]
    assert firewall(report)[("inbound", "ipv4", 25)] == ("allow", None)
    assert inbound(report)[25] == ("filtered", "public")
    assert "provider.port_blocked" in codes(report)


# --- the real CLI -----------------------------------------------------------------------------

def mailcheck(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAILCHECK_PROBE_TIMEOUT": str(PROBE_TIMEOUT), "MAILCHECK_CONNECT_TIMEOUT": "3"}
    env.pop("MAILCHECK_INVENTORY", None)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parents[2])


def test_cli_json_per_port_verdicts(labhost):
    labhost.start_exim("public", ports=(25, 587))
    labhost.start_dovecot(tls=True)
    labhost.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "993", "-j", "DROP")
    r = mailcheck("check", f"root@{labhost.ip}", "-i", str(labhost.client_key),
                  "--known-hosts", str(labhost.known_hosts), "--json")
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    got = {(p["direction"], p["family"], p["port"]): (p["outside"], p["listening"]) for p in data["ports"]}
    assert got[("inbound", "ipv4", 25)] == ("open", "public")
    assert got[("inbound", "ipv4", 465)] == ("refused", "none")
    assert got[("inbound", "ipv4", 993)] == ("filtered", "public")
    assert got[("inbound", "ipv6", 993)] == ("open", "public")
    assert got[("outbound", "ipv4", 25)] == (None, "unknown")
    assert len(got) == len(data["ports"]) == 16
    fw = {(p["direction"], p["family"], p["port"]): (p["firewall"], p["blocked_by"]) for p in data["ports"]}
    assert fw[("inbound", "ipv4", 993)] == (
        "block", "iptables -t filter chain INPUT rule 1: -A INPUT -p tcp -m tcp --dport 993 -j DROP")
    assert all(v == ("allow", None) for k, v in fw.items() if k != ("inbound", "ipv4", 993))
    for p in data["ports"]:
        assert set(p) >= {"port", "direction", "family", "outside", "listening", "process",
                          "firewall", "blocked_by"}
    assert data["verdict"] == "broken" and data["exit_code"] == 1
    assert [s["name"] for s in data["steps"]] == ["tools", "services", "ports", "vantage", "outbound",
                                                  "resolver", "firewall", "provider", "conclusion", "dns",
                                                  "reputation"]
    assert "[warn] services: " in r.stderr and "] conclusion: " in r.stderr  # progress lines


def test_cli_terminal_report(labhost):
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    r = mailcheck("check", f"root@{labhost.ip}", "-i", str(labhost.client_key),
                  "--known-hosts", str(labhost.known_hosts))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mail can flow" in r.stdout and "exim4" in r.stdout


async def test_rocky_host_gets_rhel_names(lab):
    """A host whose /etc/os-release says Rocky: exim's unit/init script is `exim`, tools via dnf."""
    from tests.labhost import ROCKY_OS_RELEASE

    rocky = lab(os_release=ROCKY_OS_RELEASE)
    report = await run_check(rocky)
    restart = {tuple(c) for fix in report.fixes if fix.kind == "service" for c in fix.commands}
    assert restart == {("/etc/init.d/exim", "restart"), ("/etc/init.d/dovecot", "restart")}
    assert report.exit_code == 1


async def test_outbound_test_sees_an_output_drop(labhost):
    """With lab outbound targets (the outside end of the host's link), `nc -vz` from the host;
    the host's own OUTPUT drop is the host firewall's, not a block outside the host."""
    labhost.start_exim("public")
    labhost.sh("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    o = labhost.outside_ip
    settings = Settings(probe_timeout=PROBE_TIMEOUT, connect_timeout=3, _env_file=None,
                        outbound_targets=f"{o}:25, {o}:465, {o}:587")
    with labhost.outside_listener((25, 465, 587)):
        report = await Engine(settings, Inventory()).check(host_of(labhost))
    out = {(p.family, p.port): p.outside for p in report.ports if p.direction == "outbound"}
    assert out == {("ipv4", 25): "filtered", ("ipv4", 465): "open", ("ipv4", 587): "open",
                   ("ipv6", 25): None, ("ipv6", 465): None, ("ipv6", 587): None}  # IPv4 targets only
    failed = [f for f in report.findings if f.code.startswith("outbound.")]
    assert [(f.summary, f.severity) for f in failed] == [
        (f"Outbound 25/IPv4: connections from the host to {o} ({o}) time out (filtered: something "
         "drops the packets)", "error")]
    assert "provider.outbound_blocked" not in {f.code for f in report.findings}  # the host's own rule
    assert "firewall.outbound_blocked" in {f.code for f in report.findings}
