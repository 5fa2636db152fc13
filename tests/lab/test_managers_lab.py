"""Firewall managers really run in the lab hosts: fail2ban (Debian's) and CSF."""

from __future__ import annotations

import pytest

from tests.f2blab import ban, start_fail2ban, unban
from tests.lab.test_container_lab import ssh

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("banaction", ["iptables-multiport", "nftables-multiport"])
def test_fail2ban_ban_blocks_and_unbanip_opens(labhost, banaction):
    labhost.start_exim("public")
    start_fail2ban(labhost, jail="exim", banaction=banaction)
    assert labhost.probe(25) == "open"
    ban(labhost, "exim", labhost.outside_ip)
    assert labhost.probe(25) == "refused"  # the banaction's REJECT (icmp port-unreachable)
    assert labhost.probe(587) == "refused"
    assert labhost.probe(22) == "open"  # the jail covers smtp,465,submission only
    # what mailcheck will read over SSH: the jail, its ban list and ban time
    r = ssh(labhost, "fail2ban-client status exim")
    assert r.returncode == 0, r.stderr
    assert f"Banned IP list:\t{labhost.outside_ip}" in r.stdout
    assert ssh(labhost, "fail2ban-client get exim bantime").stdout.strip() == "3600"
    unban(labhost, "exim", labhost.outside_ip)
    assert labhost.probe(25) == "open"
    assert "Currently banned:\t0" in labhost.sh("fail2ban-client", "status", "exim").stdout


def test_fail2ban_config_is_the_hosts_own(lab):
    a, b = lab(), lab()
    start_fail2ban(a, jail="exim")
    assert "exim" in a.sh("fail2ban-client", "status").stdout
    assert b.sh("fail2ban-client", "ping", check=False).returncode != 0  # b has no server
    assert not (b.etc / "fail2ban").exists()


def test_csf_tcp_in_decides_and_csf_r_undoes_a_raw_fix(labhost, csf_src):
    from tests.csflab import Csf, get_option

    labhost.start_exim("public")
    csf = Csf(labhost, csf_src).install(TESTING="0", TCP_IN="22,80,443")
    csf.cli("-s")
    assert "csf: v15.03 (generic)" in csf.cli("-v").stdout
    assert labhost.probe(25) == "filtered" and labhost.probe(587) == "filtered"
    assert labhost.probe(25, six=True) == "open"  # IPV6="0": CSF leaves IPv6 unfiltered
    # mailcheck reads the manager's settings over SSH
    r = ssh(labhost, "csf -v; grep -E '^(TCP_IN|IPV6|TESTING) ' /etc/csf/csf.conf")
    assert r.returncode == 0 and r.stdout.startswith("csf: v15.03 (generic)")
    assert 'TCP_IN = "22,80,443"' in r.stdout and 'IPV6 = "0"' in r.stdout
    # a raw rule opens 587 ... until the manager's next restart
    labhost.sh("iptables", "-I", "INPUT", "-p", "tcp", "--dport", "587", "-j", "ACCEPT")
    assert labhost.probe(587) == "open"
    csf.cli("-r")
    assert labhost.probe(587) == "filtered", "csf -r should have wiped the raw rule"
    # the fix through the manager: TCP_IN in csf.conf, then csf -r
    csf.set(TCP_IN="22,25,80,443,465,587")
    csf.cli("-r")
    assert get_option(csf.conf_path.read_text(), "TCP_IN") == "22,25,80,443,465,587"
    assert labhost.probe(25) == "open" and labhost.probe(587) == "open"


def test_csf_testing_mode_schedules_a_flush(labhost, csf_src):
    from tests.csflab import Csf

    labhost.start_exim("public")
    csf = Csf(labhost, csf_src).install(TCP_IN="22")  # TESTING="1" as shipped
    csf.cli("-s")
    assert labhost.probe(25) == "filtered"
    crontab = (labhost.etc / "crontab").read_text()
    assert "*/5 * * * * root /usr/sbin/csf -f" in crontab
    csf.cli("-f")  # what that cron line runs every TESTING_INTERVAL minutes
    assert labhost.probe(25) == "open"
    assert ":INPUT ACCEPT" in labhost.sh("iptables-save").stdout
