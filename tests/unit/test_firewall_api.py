"""analyze() end to end on captured lab output: verdicts, findings, linked fixes."""

from __future__ import annotations

import pytest

from bot.firewall.api import AnalysisContext, analyze, collect_commands
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS
from tests.firewall_corpus import CORPUS, load_captured, load_case


def _analyze(name: str):
    case = load_case(CORPUS / name)
    a = case.expected()["addresses"]
    ctx = AnalysisContext(INBOUND_PORTS, OUTBOUND_PORTS, a["prober"], a["prober6"], a["host"], a["host6"],
                          inbound_iface="eth0", families=("ipv4", "ipv6"), host_addrs=(a["host"], a["host6"]))
    return analyze(load_captured(case.captured_dir), context=ctx), case.expected()["kernel"]


@pytest.mark.parametrize("name", ["guide_policy_accept_multiport_drop", "guide_policy_drop_ssh_only",
                                  "ufw_deny_incoming_ssh_only", "nft-inet-policy-drop-ssh-only",
                                  "rhel_reject_all"])
def test_blocked_ports_get_a_linked_fix_that_opens_them(name):
    analysis, kernel = _analyze(name)
    blocked = {k for k, d in analysis.decisions.items() if d.verdict == "block"}
    assert blocked, "the case blocks mail ports"
    for key in blocked:  # the evaluator agrees with what the kernel did in the lab
        assert kernel["/".join(map(str, key))] == "block"
    opened = {tuple(k) for f in analysis.fixes for k in f.expected_allow}
    assert blocked <= opened
    for finding in analysis.findings:
        if finding.code.endswith("_blocked"):
            assert finding.fixes and set(finding.fixes) <= {f.id for f in analysis.fixes}
    assert "firewall.fix_not_planned" not in {f.code for f in analysis.findings}


def test_a_ban_on_the_prober_is_not_planned_away():
    analysis, _ = _analyze("f2b_prober_banned")
    codes = {f.code for f in analysis.findings}
    assert "firewall.prober_banned" in codes
    assert not any("f2b" in " ".join(map(" ".join, f.commands)) for f in analysis.fixes)


def test_collection_is_read_only():
    writes = ("-A", "-I", "-D", "-F", "-P", "add", "insert", "delete", "flush", "--add-service", "allow", "deny")
    for cmd in collect_commands():
        assert not set(cmd.argv) & set(writes), cmd.display



def test_a_front_end_that_does_not_run_costs_one_command():
    """firewall-cmd and fail2ban-client are Python programs (~0.1-0.15 s of the host's CPU each):
    their follow-up reads are asked only in the round after the first says the tool runs."""
    from bot.firewall.parse.fail2ban import F2B_BANNED, F2B_DUMP, F2B_STATUS
    from bot.firewall.parse.firewalld import ACTIVE_ZONES, ALL_ZONES, DEFAULT_ZONE, STATE
    from bot.models import Command, CommandResult

    def asked(state: tuple[int, str], f2b: tuple[int, str]) -> set:
        results = {argv: CommandResult(Command(argv), status, out, "")
                   for argv, (status, out) in ((STATE, state), (F2B_STATUS, f2b))}
        return {c.argv for c in collect_commands(results)}

    follow = {DEFAULT_ZONE, ACTIVE_ZONES, ALL_ZONES, F2B_BANNED, F2B_DUMP}
    first = {c.argv for c in collect_commands({})}
    assert {STATE, F2B_STATUS} <= first and not follow & first  # nothing answered yet
    assert follow <= {c.argv for c in collect_commands()}  # None: a recording asks for everything
    assert not follow & asked((252, "not running\n"), (255, ""))
    assert follow <= asked((0, "running\n"), (0, "Status\n|- Number of jail:\t1\n`- Jail list:\texim\n"))
    assert not follow & asked((1, "Authorization failed.\n"), (255, ""))  # unclear: its parse stops too
