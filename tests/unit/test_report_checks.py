"""The lab's report check (tests/report_checks.py) on hand-made reports: it sees a finding the
outside probes contradict, and only such."""

from __future__ import annotations

from bot.models import Finding, PortKey, PortStatus, Report
from tests.report_checks import contradictions, ports_named


def report(findings, **ports) -> Report:
    rows = [PortStatus(port=int(k[1:].split("_")[0]), direction="inbound", family=k.split("_")[1], outside=v[0],
                       firewall=v[1]) for k, v in ports.items()]
    return Report(host="mx", address="198.18.0.2", ports=rows, findings=findings)


def finding(code, summary, step="x"):
    return Finding(code=code, severity="error", summary=summary, step=step)


def test_ports_named_by_labels_or_bare_mail_ports():
    assert ports_named("Inbound mail ports 25/IPv4, 587/IPv6 are blocked") == {(25, "ipv4"), (587, "ipv6")}
    assert ports_named("exim is installed but not running: no SMTP (25, 465, 587)") == {
        (25, None), (465, None), (587, None)}
    assert ports_named("dovecot 2.3.19 on 198.18.0.2 port 8080") == set()
    assert ports_named("Port(s) 25, 587 (IPv4, IPv6) are served by container mail") == {
        (25, "ipv4"), (25, "ipv6"), (587, "ipv4"), (587, "ipv6")}
    assert ports_named("iptables INPUT rule 2 drops inbound 25,143 (IPv4)") == {(25, "ipv4"), (143, "ipv4")}
    # a setting's value is not a port the finding speaks of
    assert ports_named("Nothing listens on port 465 (exim's daemon_smtp_ports = 25 : 587)") == {(465, None)}


def test_a_closed_claim_on_an_open_port_is_a_contradiction():
    r = report([finding("service.down", "exim is installed but not running: no SMTP (25, 465, 587)", "services"),
                finding("firewall.inbound_blocked", "Inbound mail ports 587/IPv6 are blocked by the host firewall")],
               p25_ipv4=("open", "allow"), p587_ipv4=("open", "allow"), p587_ipv6=("filtered", "block"))
    found = contradictions(r)
    assert len(found) == 1 and found[0].startswith("service.down (services)") and "found 25/ipv4, 587/ipv4 open" in found[0]


def test_a_block_verdict_on_an_open_port_is_a_contradiction_and_a_true_report_has_none():
    assert contradictions(report([], p25_ipv4=("open", "block")))[0].startswith("port 25/ipv4: firewall says block")
    ok = report([finding("firewall.inbound_blocked", "Inbound mail ports 25/IPv4 are blocked by the host firewall"),
                 finding("firewall.manager", "CSF manages 25/IPv4")],
                p25_ipv4=("filtered", "block"), p587_ipv4=("open", "allow"))
    assert contradictions(ok) == []


def test_a_findings_family_is_its_ports_and_its_texts():
    """Main's summaries say '25,465 (IPv4)': IPv4 only, as the finding's PortKeys say too (a CSF
    host with IPV6 = "0" blocks 25/IPv4 while 25/IPv6 is open)."""
    blocked = Finding(code="firewall.inbound_blocked", severity="error", step="firewall",
                      summary="iptables LOGDROPIN rule 24 drops inbound 25,465 (IPv4)",
                      ports=[PortKey("inbound", "ipv4", 25), PortKey("inbound", "ipv4", 465)])
    r = report([blocked], p25_ipv4=("filtered", "block"), p25_ipv6=("open", "allow"))
    assert contradictions(r) == []
    r = report([blocked], p25_ipv4=("open", "block"))
    assert contradictions(r)[0].startswith("firewall.inbound_blocked (firewall)") and "25/ipv4" in contradictions(r)[0]


def test_a_served_claim_on_a_refused_port_and_the_declared_ports_count_too():
    served = finding("service.container", "Port(s) 25, 587 (IPv4, IPv6) are served by container mail")
    r = report([served], p25_ipv4=("open", "allow"), p587_ipv6=("refused", "allow"), p587_ipv4=("refused", "block"))
    (found,) = contradictions(r)
    assert found.startswith("service.container (x)") and "refused on 587/ipv6" in found
    quiet = Finding(code="service.down", severity="error", summary="dovecot is not running", step="services",
                    ports=[PortKey("inbound", "ipv4", 143), PortKey("outbound", "ipv4", 25)])
    (found,) = contradictions(report([quiet], p143_ipv4=("open", "allow"), p25_ipv4=("open", "allow")))
    assert "found 143/ipv4 open" in found
