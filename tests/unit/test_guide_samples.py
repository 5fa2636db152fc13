"""The sample outputs printed in the guide are read as the guide explains them."""

from __future__ import annotations

import pytest

from bot.checks import served, services
from bot.checks.outbound import read_nc_output
from bot.checks.parse import daemon_of, parse_lsof, parse_systemctl_status
from bot.checks.services import Services
from bot.models import PortUpdate
from tests.unit.checkdata import facts, guide, make_input, result, results

NO_SS = result(services.SS, exit_status=127, stderr="timeout: failed to run command 'ss'")
INSTALLED_EXIM_DOVECOT = result(services.INSTALLED, "/usr/sbin/dovecot\n/usr/sbin/exim\n", 2)


def test_lsof_port_25_exim_listens_on_every_address_both_families():
    found = parse_lsof(guide("lsof_25.txt"))
    assert {(x.port, x.address, x.process, x.pid, x.family) for x in found} == {
        (25, "*", "exim", 839, "ipv6"), (25, "*", "exim", 839, "ipv4")}
    assert daemon_of("exim") == "exim"
    assert served.port_state(25, "ipv4", found) == ("public", "exim")
    assert served.port_state(25, "ipv6", found) == ("public", "exim")


def test_lsof_port_143_dovecot_listens():
    found = parse_lsof(guide("lsof_143.txt"))
    assert served.port_state(143, "ipv4", found) == ("public", "dovecot")
    assert served.port_state(143, "ipv6", found) == ("public", "dovecot")
    assert daemon_of("dovecot") == "dovecot"


def test_both_guide_lsof_samples_mean_everything_is_fine_for_25_and_143():
    lsof = result(services.LSOF, guide("lsof_25.txt") + guide("lsof_143.txt").split("\n", 1)[1])
    out = Services().evaluate(make_input(results(NO_SS, lsof, INSTALLED_EXIM_DOVECOT)))
    assert out.ports[("inbound", "ipv4", 25)] == PortUpdate(listening="public", process="exim")
    assert out.ports[("inbound", "ipv6", 143)] == PortUpdate(listening="public", process="dovecot")
    assert not [f for f in out.findings if f.code == "service.down"]


def test_empty_lsof_means_the_mail_services_are_not_available():
    assert parse_lsof(guide("lsof_empty.txt")) == []
    lsof = result(services.LSOF, guide("lsof_empty.txt"), exit_status=1)  # lsof exits 1 on no match
    out = Services().evaluate(make_input(results(NO_SS, lsof, INSTALLED_EXIM_DOVECOT)))
    assert out.status == "fail"
    down = [f for f in out.findings if f.code == "service.down"]
    assert {f.summary.split()[0] for f in down} == {"exim", "dovecot"}
    assert all(out.ports[("inbound", "ipv4", p)].listening == "none" for p in (25, 143))


@pytest.mark.parametrize("name,unit", [("systemctl_exim_active.txt", "exim.service"),
                                       ("systemctl_dovecot_active.txt", "dovecot.service")])
def test_systemctl_status_active_running(name, unit):
    status = parse_systemctl_status(guide(name))[unit]
    assert (status.loaded, status.active, status.sub, status.running) == ("loaded", "active", "running", True)
    assert status.main_pid in (839, 859)


@pytest.mark.parametrize("name,unit", [("systemctl_exim_inactive.txt", "exim.service"),
                                       ("systemctl_dovecot_inactive.txt", "dovecot.service")])
def test_systemctl_status_inactive_dead(name, unit):
    status = parse_systemctl_status(guide(name))[unit]
    assert (status.active, status.sub, status.running) == ("inactive", "dead", False)
    assert status.since.startswith("Sun 2025-11-02 17:3")


def test_inactive_exim_on_rocky_is_down_and_the_fix_is_the_guides_restart():
    text = guide("systemctl_exim_inactive.txt") + guide("systemctl_dovecot_active.txt")
    res = results(result(services.SS, ""), INSTALLED_EXIM_DOVECOT,
                  result(services.SYSTEMCTL, text, exit_status=3))
    out = Services().evaluate(make_input(res, host_facts=facts("rhel", "rocky", systemd=True)))
    down = [f for f in out.findings if f.code == "service.down"]
    assert len(down) == 1 and down[0].summary.startswith("exim")
    assert "Active: inactive (dead)" in down[0].evidence
    assert [fx.commands for fx in out.fixes] == [[["systemctl", "restart", "exim"]]]
    assert out.fixes[0].rollback == []


def test_debian_unit_is_exim4():
    text = guide("systemctl_exim_inactive.txt").replace("exim.service", "exim4.service")
    res = results(result(services.SS, ""), INSTALLED_EXIM_DOVECOT,
                  result(services.SYSTEMCTL, text + guide("systemctl_dovecot_active.txt"), 3))
    out = Services().evaluate(make_input(res, host_facts=facts("debian", "debian", systemd=True)))
    assert [fx.commands for fx in out.fixes] == [[["systemctl", "restart", "exim4"]]]


@pytest.mark.parametrize("name,verdict", [
    ("nc_debian_open.txt", "open"), ("nc_debian_refused.txt", "refused"),
    ("nc_rocky_open.txt", "open"), ("nc_rocky_refused.txt", "refused"),
])
def test_nc_samples(name, verdict):
    assert read_nc_output(guide(name)) == verdict


def test_nc_timeout_is_filtered():
    text = "nc: connect to 198.18.1.2 port 25 (tcp) timed out: Operation now in progress\n"
    assert read_nc_output(text, 1) == "filtered"


def _firewall_summary(ufw_result):
    from pathlib import Path

    from bot.checks import firewall
    from bot.probes import ProbeReport
    from tests.firewall_corpus import load_captured

    case = Path(__file__).parents[1] / "data" / "firewall" / "guide_policy_accept_multiport_drop"
    res = {**load_captured(case / "captured"), ufw_result.command.argv: ufw_result}
    out = firewall.evaluate(make_input(res, probes=ProbeReport([], {"ipv4": "198.18.2.1"}),
                                       addresses={"ipv4": "198.18.2.2"}))
    return out.summary


def test_ufw_status_verbose_sample_means_ufw_is_used():
    """Guide step 4: output starting with 'Status: active' means UFW is in charge."""
    argv = ("ufw", "status", "verbose")
    assert _firewall_summary(result(argv, guide("ufw_status_verbose.txt"))).startswith("ufw,")


def test_ufw_command_not_found_means_iptables_is_used():
    argv = ("ufw", "status", "verbose")
    missing = result(argv, "", 127, "-bash: ufw: command not found")
    assert _firewall_summary(missing) == (
        "iptables, 2 rules block mail: inbound 25, 143, 465, 587, 993; outbound 25, 465, 587")


@pytest.mark.parametrize("comm,args,daemon", [
    ("exim4", "exim4 -bd", "exim"), ("master", "/usr/lib/postfix/sbin/master -w", "postfix"),
    ("smtpd", "smtpd -n smtp -t inet -u -o stress=", "postfix"), ("smtpd", "/usr/sbin/smtpd", "opensmtpd"),
    ("sendmail", "sendmail: MTA: accepting connections", "sendmail"),
    ("master", "/usr/lib/cyrus/bin/master -d", "cyrus"), ("couriertcpd", "couriertcpd 143", "courier"),
    ("dovecot", "/usr/sbin/dovecot -F", "dovecot"), ("sshd", "sshd -D", None),
])
def test_daemon_identity(comm, args, daemon):
    assert daemon_of(comm, args) == daemon
