"""The services step on what it read from real lab hosts (tests/services_recordings.py).

Real Postfix (postscreen, loopback-only, no submission), real dockerd and podman with a
Postfix container (running, stopped, userland proxy off), Docker 28's nftables layout with
no proxy (DNAT only), Debian's exim the Debian way (loopback only), and a Dovecot stopped
with its own log file. Each recording also holds what the outside probes saw of each
port; no finding may contradict them (tests/report_checks.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.checks import facts, mta_config
from bot.checks.services import Services
from bot.models import Finding, PortKey, PortStatus, Report
from tests.firewall_corpus import load_captured
from tests.report_checks import contradictions
from tests.unit.checkdata import base_ports, make_input

DATA = Path(__file__).parents[1] / "data" / "services"
RECORDED = sorted(p.name for p in DATA.iterdir() if (p / "meta.json").exists())


def evaluate(name: str):
    results = load_captured(DATA / name)
    meta = json.loads((DATA / name / "meta.json").read_text())
    inp = make_input(results, host_facts=facts.read_facts(results), addresses=meta["addresses"])
    inp = type(inp)(**{**inp.__dict__, "sources": meta["sources"]})
    return Services().evaluate(inp), meta, results


def report_of(name: str) -> tuple[Report, object]:
    """The step's outcome as a report, its ports joined with what the outside probes saw."""
    out, meta, _ = evaluate(name)
    ports = []
    for key, status in base_ports().items():
        if key in out.ports:
            status = out.ports[key].apply(status)
        if key[0] == "inbound":
            status = status.model_copy(update={"outside": meta["outside"][f"{key[1]}/{key[2]}"],
                                               "firewall": "allow"})
        ports.append(status)
    return Report(host=name, address="lab", ports=ports, findings=out.findings, fixes=out.fixes), out


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def port(report: Report, family: str, number: int) -> PortStatus:
    return next(p for p in report.ports if (p.direction, p.family, p.port) == ("inbound", family, number))


@pytest.mark.parametrize("name", RECORDED)
def test_no_finding_contradicts_the_outside_probes(name):
    report, _ = report_of(name)
    assert contradictions(report) == []


def test_recordings_cover_the_scenarios():
    assert set(RECORDED) >= {"postfix_postscreen", "postfix_loopback_only", "postfix_no_submission",
                             "docker_running", "docker_exited", "docker_no_proxy", "netns_docker28_nft",
                             "podman_running", "podman_exited", "exim_loopback", "dovecot_down"}


# --- Postfix -----------------------------------------------------------------------------------

def test_postfix_with_postscreen_is_recognised_by_its_master_and_postscreen():
    report, out = report_of("postfix_postscreen")
    p25 = port(report, "ipv4", 25)
    # before the first connection only master holds the sockets (it starts postscreen on demand)
    assert p25.listening == "public" and p25.process == "master"
    assert "service.down" not in codes(out.findings)  # master (ps: /usr/lib/postfix/sbin/master)
    assert "postfix: listening" in out.evidence
    assert "postfix master.cf: smtp inet -> postscreen" in out.evidence
    assert "port 25 is answered by Postfix's postscreen: its final 220 greeting comes after " \
           "postscreen_greet_wait (6s) on purpose" in out.evidence
    (missing,) = [f for f in out.findings if f.code == "service.not_listening"]
    assert "master.cf has no submissions service (465)" in missing.summary
    fix = next(f for f in out.fixes if f.id == missing.fixes[0])
    assert fix.commands[0] == ["postconf", "-M", "submissions/inet=submissions inet n - y - - smtpd"]
    assert ["postconf", "-P", "submissions/inet/smtpd_tls_wrappermode=yes"] in fix.commands
    assert fix.commands[-2:] == [["postfix", "check"], ["postfix", "reload"]]
    assert fix.backup.paths == ["/etc/postfix/master.cf"] and fix.backup.reload == [["postfix", "reload"]]
    assert fix.preconditions[0].argv == list(mta_config.POSTCONF_MASTER)


def test_postfix_loopback_only_explained_by_inet_interfaces_and_fixed_in_main_cf():
    report, out = report_of("postfix_loopback_only")
    assert port(report, "ipv4", 25).listening == "loopback"
    loop = [f for f in out.findings if f.code == "service.loopback_only"]
    assert {f.summary.split()[1] for f in loop} == {"25", "587"}
    assert all("postfix's inet_interfaces = loopback-only (main.cf)" in f.summary for f in loop)
    fix = next(f for f in out.fixes if f.id == "postfix-listen-all")
    assert fix.kind == "config" and fix.commands == [
        ["postconf", "-e", "inet_interfaces=all"], ["postfix", "check"], ["/etc/init.d/postfix", "restart"]]
    assert fix.backup.paths == ["/etc/postfix/main.cf"]
    assert {(k.family, k.port) for k in fix.expected_allow} == {
        (f, p) for f in ("ipv4", "ipv6") for p in (25, 587)}


def test_postfix_without_submission_gets_debians_submission_service():
    _, out = report_of("postfix_no_submission")
    (f587,) = [f for f in out.findings if f.summary.startswith("Nothing listens on port 587")]
    assert "master.cf has no submission service (587)" in f587.summary
    fix = next(f for f in out.fixes if f.id == "postfix-enable-submission")
    assert ["postconf", "-P", "submission/inet/smtpd_tls_security_level=encrypt"] in fix.commands


def test_a_port_redirected_to_another_local_port_is_forwarded_to_its_listener():
    """587 REDIRECTed to 25, where Postfix listens (the recording, with that nat rule added): the
    firewall's evaluator says where the rule sends it, the services step names who answers."""
    from tests.unit.checkdata import result

    nat = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
           ":POSTROUTING ACCEPT [0:0]\n[0:0] -A PREROUTING -p tcp -m tcp --dport 587 -j REDIRECT "
           "--to-ports 25\nCOMMIT\n")
    results = load_captured(DATA / "postfix_no_submission")
    results[("iptables-save", "-c")] = result(("iptables-save", "-c"), nat)
    meta = json.loads((DATA / "postfix_no_submission" / "meta.json").read_text())
    inp = make_input(results, host_facts=facts.read_facts(results), addresses=meta["addresses"])
    out = Services().evaluate(type(inp)(**{**inp.__dict__, "sources": meta["sources"]}))
    assert (out.ports[PortKey("inbound", "ipv4", 587)].listening, out.ports[PortKey("inbound", "ipv4", 587)].process) \
        == ("forwarded", "master")
    (fwd,) = [f for f in out.findings if f.code == "service.forwarded"]
    assert fwd.summary.startswith("No process of the host listens on port(s) 587 (IPv4): nat rules forward "
                                  "them to local port(s) of the host (REDIRECT)")
    assert "-A PREROUTING -p tcp -m tcp --dport 587 -j REDIRECT --to-ports 25" in fwd.evidence
    assert not [f for f in out.findings if f.summary.startswith("Nothing listens on port 587 ")]


# --- containers --------------------------------------------------------------------------------

def test_docker_proxy_ports_are_the_containers_not_a_down_exim():
    report, out = report_of("docker_running")
    assert port(report, "ipv4", 25).process == "docker-proxy" == port(report, "ipv6", 587).process
    assert "service.down" not in [f.code for f in out.findings if "exim" in f.summary]
    (c,) = [f for f in out.findings if f.code == "service.container"]
    assert c.summary.startswith("Port(s) 25, 587 (IPv4, IPv6) are served by container mail (image "
                                "mailcheck-lab/postfix:bookworm, docker, running)")
    assert "exim: no process of it listens on this host (its role is served by container mail)" in out.evidence


@pytest.mark.parametrize("name,engine", [("docker_exited", "docker"), ("podman_exited", "podman")])
def test_a_stopped_container_is_named_and_restarted_through_its_engine(name, engine):
    _, out = report_of(name)
    assert "service.down" not in [f.code for f in out.findings if "exim" in f.summary]
    (down,) = [f for f in out.findings if f.code == "service.container_down"]
    assert down.severity == "error" and "publishes port(s) 25, 587 (IPv4)" in down.summary
    assert f"mail (image {'localhost/' if engine == 'podman' else ''}mailcheck-lab/postfix:bookworm, " \
        f"{engine}, exited with code 0" in down.summary
    fix = next(f for f in out.fixes if f.id == down.fixes[0])
    (cmd,) = fix.commands
    assert cmd[:2] == [engine, "restart"] and len(cmd[2]) == 64  # the id, never a name
    assert fix.preconditions[0].argv == [engine, "inspect", "-f", "{{.State.Status}}", cmd[2]]
    assert {(k.family, k.port) for k in fix.expected_allow} == {("ipv4", 25), ("ipv4", 587)}
    assert "service.not_listening" not in [f.code for f in out.findings if "587" in f.summary]


def test_podman_conmon_holds_the_ports_for_the_container():
    report, out = report_of("podman_running")
    assert port(report, "ipv4", 25).process == "conmon"
    assert port(report, "ipv6", 25).listening == "none"  # netavark's IPv4 network: nothing on IPv6
    (c,) = [f for f in out.findings if f.code == "service.container"]
    assert "Port(s) 25, 587 (IPv4) are served by container mail" in c.summary and "podman, running" in c.summary
    gaps = sorted(f.summary for f in out.findings if f.code == "service.not_listening" and "IPv6" in f.summary)
    assert gaps == [f"Nothing listens on {p}/IPv6 (container mail (podman) publishes it over IPv4 only); "
                    "over IPv4 it is served" for p in (25, 587)]


def test_dockerd_holds_the_port_when_the_userland_proxy_is_off():
    report, out = report_of("docker_no_proxy")
    assert port(report, "ipv4", 25).process == "dockerd"
    (c,) = [f for f in out.findings if f.code == "service.container"]
    assert "served by container mail" in c.summary and "dockerd itself" in c.summary


def test_no_listener_but_a_dnat_rule_is_forwarded_not_nothing():
    report, out = report_of("netns_docker28_nft")
    p25 = port(report, "ipv4", 25)
    assert p25.listening == "forwarded"
    (fwd,) = [f for f in out.findings if f.code == "service.forwarded"]
    assert "No process of the host listens on port(s) 25, 587 (IPv4)" in fwd.summary
    assert "dnat to 198.19." in fwd.evidence
    (v6,) = [f for f in out.findings if f.code == "service.not_listening" and " 25" in f.summary]
    assert v6.summary == "Nothing listens on 25/IPv6 (a nat rule publishes it over IPv4 only); over " \
                         "IPv4 it is served" and v6.severity == "warning"


# --- exim and dovecot ----------------------------------------------------------------------------

def test_debian_exim_loopback_only_explained_and_fixed_through_dc_local_interfaces():
    _, out = report_of("exim_loopback")
    (loop,) = [f for f in out.findings if f.code == "service.loopback_only"]
    assert "exim's local_interfaces = <; 127.0.0.1 ; ::1, from Debian's dc_local_interfaces=" \
           "'127.0.0.1 ; ::1' in /etc/exim4/update-exim4.conf.conf" in loop.summary
    fix = next(f for f in out.fixes if f.id == loop.fixes[0])
    assert fix.commands == [
        ["sed", "-i", "-e", "s/^dc_local_interfaces=.*/dc_local_interfaces=''/", "/etc/exim4/update-exim4.conf.conf"],
        ["update-exim4.conf"], ["exim4", "-bV"], ["/etc/init.d/exim4", "restart"]]
    assert fix.backup.paths == ["/etc/exim4/update-exim4.conf.conf", "/var/lib/exim4/config.autogenerated"]
    assert fix.backup.reload == [["/etc/init.d/exim4", "restart"]]
    assert fix.preconditions[0].argv == ["cat", "/etc/exim4/update-exim4.conf.conf"]
    (sub,) = [f for f in out.findings if f.summary.startswith("Nothing listens on port 587")]
    assert "daemon_smtp_ports = smtp does not include 465 or 587" in sub.summary
    assert "465 needs TLS first" in sub.summary
    ports = next(f for f in out.fixes if f.id == "exim-ports-587")
    assert ports.commands[0] == ["sh", "-c", 'printf "%s\\n" "$1" >>"$2"', "sh",
                                 "daemon_smtp_ports = 25 : 587", "/etc/exim4/exim4.conf.localmacros"]


def test_a_down_dovecot_shows_its_own_log_not_exims():
    out, _, _ = evaluate("dovecot_down")
    (down,) = [f for f in out.findings if f.code == "service.down"]
    assert down.summary.startswith("dovecot is installed but not running")
    assert "<log_path (doveconf)>" in down.evidence and "master: Warning: Killed with signal 15" in down.evidence
    assert "exim" not in down.evidence.lower()


# --- the ports step reads the same configuration ------------------------------------------------

def _ports_step(name: str, probes, extra_ss: str = ""):
    from bot.checks.ports import Ports
    from bot.checks.services import SS
    from tests.unit.checkdata import result

    results = load_captured(DATA / name)
    results[SS] = result(SS, results[SS].stdout + extra_ss)
    meta = json.loads((DATA / name / "meta.json").read_text())
    inp = make_input(results, host_facts=facts.read_facts(results), addresses=meta["addresses"],
                     probes=probes)
    return Ports().evaluate(inp)


def test_plain_smtp_on_exims_465_names_tls_on_connect():
    from bot.probes import PortProbe, ProbeReport, TlsInfo

    def probe():
        return ProbeReport([PortProbe("ipv4", "198.18.2.2", 465, "open", "198.18.2.1", 0.1, tls=TlsInfo(
            error="plain text where TLS was expected", plaintext="220 mx.lab.test ESMTP Exim 4.96"))])

    (f,) = _ports_step("exim_loopback", probe()).findings
    assert f.code == "tls.plaintext" and "Here:" not in f.summary and f.fixes == []  # nobody on 465 here
    # exim on 465 (its listening line as ss prints exim's 25, moved to 465): the setting is named
    results = load_captured(DATA / "exim_loopback")
    line = next(x for x in results[("ss", "-Hltnp")].stdout.splitlines() if "127.0.0.1:25 " in x)
    out = _ports_step("exim_loopback", probe(), extra_ss=line.replace("127.0.0.1:25 ", "0.0.0.0:465 ") + "\n")
    (f,) = out.findings
    assert f.code == "tls.plaintext" and "speaks plain SMTP" in f.summary
    assert "Here: exim's tls_on_connect_ports = '' does not include 465" in f.summary
    assert "TLS is not set up" in f.summary and f.fixes == []  # no certificate: no fix to offer
