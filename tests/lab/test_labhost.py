"""The lab itself behaves as LAB.md says: the kernel is the judge."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab


def test_ports_open_refused_filtered(labhost):
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    assert labhost.probe(25) == "open"
    assert labhost.probe(993) == "open"
    assert labhost.probe(25, six=True) == "open"
    labhost.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "465", "-j", "DROP")
    assert labhost.probe(465) == "filtered"
    labhost.stop_exim()
    assert labhost.probe(25) == "refused"
    assert labhost.probe(143) == "open"


def test_outbound_and_provider_block(labhost):
    with labhost.outside_listener((25, 587)):
        assert labhost.connect_out(25) == "open"
        labhost.sh("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
        assert labhost.connect_out(25) == "filtered"
        assert labhost.connect_out(587) == "open"
    labhost.start_exim("public")
    labhost.provider_blocks((25,))
    assert labhost.probe(25) == "filtered"
    assert labhost.probe(587) == "open"
    # the provider's drop is outside the host: its own ruleset has only our OUTPUT rule
    assert labhost.sh("iptables-save").stdout.count("-A ") == 1
    assert labhost.sh("iptables-save").stderr == ""


def test_loopback_exim_and_own_ufw_state(lab):
    a, b = lab(), lab()
    a.start_exim("loopback")
    assert a.probe(25) == "refused"
    a.sh("ufw", "--force", "enable")
    a.sh("ufw", "default", "deny", "outgoing")
    assert "Status: active" in a.sh("ufw", "status").stdout
    assert "Status: inactive" in b.sh("ufw", "status").stdout
    assert 'DEFAULT_OUTPUT_POLICY="ACCEPT"' in b.sh("cat", "/etc/default/ufw").stdout
