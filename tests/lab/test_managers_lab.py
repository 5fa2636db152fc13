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
