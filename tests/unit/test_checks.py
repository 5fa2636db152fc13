"""Each step on captured outputs (real lab and guide text): findings, ports, fixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.checks import StepOutcome, facts, firewall, services, tools
from bot.checks.catalogue import CATALOGUE
from bot.checks.conclusion import Conclusion
from bot.checks.ports import Ports
from bot.checks.services import Services
from bot.checks.tools import Tools
from bot.models import PortStatus, PortUpdate
from bot.probes import PortProbe, ProbeReport, SmtpInfo, TlsInfo
from tests.firewall_corpus import load_captured
from tests.unit.checkdata import LAB_IP_ADDR, base_ports, guide, make_input, result, results

CORPUS = Path(__file__).parents[1] / "data" / "firewall"

# `ss -Hltnp` in a lab host running Debian's default exim (loopback) and dovecot (captured)
SS_LOOPBACK_EXIM = """\
LISTEN 0      20     127.0.0.1:465 0.0.0.0:* users:(("exim4",pid=31002,fd=5))
LISTEN 0      20     127.0.0.1:25  0.0.0.0:* users:(("exim4",pid=31002,fd=4))
LISTEN 0      20     127.0.0.1:587 0.0.0.0:* users:(("exim4",pid=31002,fd=6))
LISTEN 0      100      0.0.0.0:143 0.0.0.0:* users:(("dovecot",pid=31006,fd=34))
LISTEN 0      128      0.0.0.0:22  0.0.0.0:* users:(("sshd",pid=30996,fd=3))
LISTEN 0      100      0.0.0.0:993 0.0.0.0:* users:(("dovecot",pid=31006,fd=36))
LISTEN 0      100         [::]:143    [::]:* users:(("dovecot",pid=31006,fd=35))
LISTEN 0      100         [::]:993    [::]:* users:(("dovecot",pid=31006,fd=37))
"""
INSTALLED = result(services.INSTALLED, "/usr/sbin/dovecot\n/usr/sbin/exim4\n", 2)
# exim4 of *another* namespace shows in ps (shared pid space): it must not count as running here
PS_OTHER_EXIM = result(services.PS, "  901 exim4 exim4 -bd -oX <; 0.0.0.0.25\n 906 dovecot /usr/sbin/dovecot\n")


# --- facts -------------------------------------------------------------------------------

def test_facts_distro_and_addresses():
    assert facts.distro_family(facts.parse_os_release(guide("os_release_rocky.txt"))) == "rhel"
    assert facts.distro_family(facts.parse_os_release(guide("os_release_debian.txt"))) == "debian"
    res = {facts.IP_ADDR: result(facts.IP_ADDR, LAB_IP_ADDR), facts.PID1: result(facts.PID1, "init\n")}
    f = facts.read_facts(res)
    assert f.global_address("ipv4") == "198.18.2.2"
    assert f.global_address("ipv6") == "2001:2:0:2::2"  # not the link-local fe80::
    assert f.iface_of("198.18.2.2") == "eth0" and f.systemd is False


# --- tools -------------------------------------------------------------------------------

def _tools(missing: set[str]):
    return results(*(result(argv, exit_status=127 if name in missing else 0)
                     for name, argv in tools.PROBES.items()))


def test_tools_present():
    out = Tools().evaluate(make_input(_tools(set())))
    assert out.status == "ok" and not out.findings


def test_tools_missing_debian_apt():
    out = Tools().evaluate(make_input(_tools({"dig", "whois"})))
    assert [f.code for f in out.findings] == ["tools.missing"]
    assert out.fixes[0].commands[-1] == ["apt-get", "install", "-y", "bind9-dnsutils", "whois"]
    assert out.findings[0].fixes == ["tools-install"]


def test_tools_missing_rocky_dnf_with_the_guides_packages():
    from tests.unit.checkdata import facts as mkfacts

    inp = make_input(_tools({"dig", "nc", "lsof", "whois"}), host_facts=mkfacts("rhel", "rocky"))
    out = Tools().evaluate(inp)
    assert out.fixes[0].commands == [["dnf", "install", "-y", "bind-utils", "nmap-ncat", "lsof", "whois"]]
    assert tools.install_argv("rhel", "centos", ["lsof"]) == ["yum", "install", "-y", "lsof"]
    assert tools.install_argv("unknown", "arch", ["lsof"]) is None


# --- services ----------------------------------------------------------------------------

def test_loopback_only_exim_is_found_and_dovecot_is_public():
    res = results(result(services.SS, SS_LOOPBACK_EXIM), INSTALLED, PS_OTHER_EXIM)
    out = Services().evaluate(make_input(res))
    codes = {(f.code, f.summary.split()[1], f.severity) for f in out.findings}
    assert codes == {("service.loopback_only", "25", "error"), ("service.loopback_only", "465", "warning"),
                     ("service.loopback_only", "587", "warning")}
    assert out.ports[("inbound", "ipv4", 25)] == PortUpdate(listening="loopback", process="exim4")
    assert out.ports[("inbound", "ipv6", 25)] == PortUpdate(listening="none", process=None)
    assert out.ports[("inbound", "ipv6", 993)] == PortUpdate(listening="public", process="dovecot")
    assert out.status == "fail"


def test_exim_down_even_though_ps_shows_an_exim_of_another_namespace():
    ss = "\n".join(line for line in SS_LOOPBACK_EXIM.splitlines() if "exim4" not in line)
    res = results(result(services.SS, ss), INSTALLED, PS_OTHER_EXIM,
                  result(("tail", "-n", "20", "/var/log/exim4/mainlog"), "2026-11-26 panic: boom\n"))
    out = Services().evaluate(make_input(res))
    down = [f for f in out.findings if f.code == "service.down"]
    assert len(down) == 1 and "panic: boom" in down[0].evidence
    assert out.fixes[0].commands == [["/etc/init.d/exim4", "restart"]]  # no systemd here
    assert not [f for f in out.findings if f.code == "service.not_listening"]  # said by service.down


def test_nothing_on_a_port():
    ss = SS_LOOPBACK_EXIM.replace("127.0.0.1:25 ", "0.0.0.0:25 ").replace("127.0.0.1:587", "0.0.0.0:587")
    ss = "\n".join(line for line in ss.splitlines() if ":465" not in line)
    out = Services().evaluate(make_input(results(result(services.SS, ss), INSTALLED)))
    assert [(f.code, f.severity, f.summary.split(" (")[0]) for f in out.findings] == [
        ("service.not_listening", "warning", "Nothing listens on 25/IPv6"),  # exim on 0.0.0.0 only,
        ("service.not_listening", "warning", "Nothing listens on port 465"),  # on a host with IPv6
        ("service.not_listening", "warning", "Nothing listens on 587/IPv6")]
    assert out.ports[("inbound", "ipv4", 465)].listening == "none"


def test_no_ss_and_no_lsof_is_a_step_error():
    res = results(result(services.SS, exit_status=127), result(services.LSOF, exit_status=127))
    out = Services().evaluate(make_input(res))
    assert out.status == "error" and "ss: not installed" in out.error and "lsof" in out.error


# --- ports -------------------------------------------------------------------------------

def _probe(port, state, family="ipv4", **kw):
    return PortProbe(family, "198.18.2.2", port, state, "198.18.2.1", 0.1, **kw)


def test_probe_results_become_outside_verdicts_and_findings():
    week = datetime.now(UTC) + timedelta(days=7)
    report = ProbeReport([
        _probe(25, "open", smtp=SmtpInfo("220 mx ESMTP Exim", ("250-mx", "250 HELP"), False)),
        _probe(587, "open", smtp=SmtpInfo("220 mx", ("250-mx", "250 STARTTLS"), True)),
        _probe(465, "filtered", error="no answer within 4s"),
        _probe(143, "refused"),
        _probe(993, "open", tls=TlsInfo("TLSv1.3", "CN=mx", "CN=mx", ("mx",), week, True)),
    ], {"ipv4": "198.18.2.1"})
    out = Ports().evaluate(make_input(probes=report))
    assert out.ports[("inbound", "ipv4", 465)].outside == "filtered"
    assert out.ports[("inbound", "ipv4", 587)].detail.endswith("STARTTLS offered")
    assert sorted(f.code for f in out.findings) == [
        "port.filtered", "port.refused", "smtp.no_starttls", "tls.self_signed"]


def test_filtered_port_25_is_an_error():
    out = Ports().evaluate(make_input(probes=ProbeReport([_probe(25, "filtered")])))
    assert out.findings[0].severity == "error" and out.status == "fail"


# --- firewall (the evaluator behind bot.firewall, on a lab-captured guide case) ------------

def test_guide_case_1_rules_block_every_mail_port_in_and_out():
    res = load_captured(CORPUS / "guide_policy_accept_multiport_drop" / "captured")
    probes = ProbeReport([], {"ipv4": "198.18.2.1"})
    out = firewall.evaluate(make_input(res, probes=probes, addresses={"ipv4": "198.18.2.2"}))
    assert {k: v.firewall for k, v in out.ports.items() if k[1] == "ipv4"} == {
        **{("inbound", "ipv4", p): "block" for p in (25, 465, 587, 143, 993)},
        **{("outbound", "ipv4", p): "block" for p in (25, 465, 587)}}
    assert "multiport" in out.ports[("inbound", "ipv4", 25)].blocked_by
    codes = {f.code for f in out.findings}
    assert {"firewall.inbound_blocked", "firewall.outbound_blocked"} <= codes
    assert codes <= set(CATALOGUE)
    ctx = firewall.context(make_input(res, probes=probes, addresses={"ipv4": "198.18.2.2"}))
    assert (ctx.prober_v4, ctx.host_v4, ctx.inbound_iface, ctx.families) == (
        "198.18.2.1", "198.18.2.2", "eth0", ("ipv4",))


# --- conclusion --------------------------------------------------------------------------

def _ports(**changes):
    out = base_ports(("ipv4",))
    for key, fields in changes.items():
        direction, port = key.split("_")
        k = (direction, "ipv4", int(port))
        out[k] = out[k].model_copy(update=fields)
    return out


OK = {s: StepOutcome("ok", "") for s in ("services", "ports", "firewall")}


def test_provider_block_only_on_all_three_pieces_of_evidence():
    blocked = {"firewall": "allow", "listening": "public", "outside": "filtered", "process": "exim4"}
    out = Conclusion().evaluate(make_input(ports=_ports(inbound_25=blocked), prior=OK))
    assert [f.code for f in out.findings] == ["provider.port_blocked"]
    assert "ticket" in out.findings[0].summary and "25" in out.findings[0].summary
    for spoil in ({"firewall": "unknown"}, {"firewall": "block"}, {"listening": "loopback"},
                  {"outside": "refused"}, {"outside": None}):
        out = Conclusion().evaluate(make_input(ports=_ports(inbound_25={**blocked, **spoil}), prior=OK))
        assert out.findings == [], spoil


def test_no_conclusion_when_a_needed_step_failed():
    prior = {**OK, "firewall": StepOutcome("error", "", error="host mx1 step firewall: boom")}
    p = {("inbound", "ipv4", 25): PortStatus(port=25, direction="inbound", firewall="allow",
                                              listening="public", outside="filtered")}
    out = Conclusion().evaluate(make_input(ports=p, prior=prior))
    assert out.status == "skipped" and not out.findings


def test_docs_list_every_finding_code():
    from bot.checks.catalogue import catalogue_markdown

    text = (Path(__file__).parents[2] / "README.md").read_text()
    assert catalogue_markdown() in text
