"""The planner registry: ownership decided in code, and a new backend is its module plus a registry line.

On captured lab output (tests/data/firewall/): what analyze() plans, and what it says it did not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.firewall import plan as registry
from bot.firewall.api import AnalysisContext, analyze, collect_commands
from bot.firewall.parse.iptables import parse_rule
from bot.firewall.plan import planners_for
from bot.firewall.plan.base import Planner, decided_at, owner_of
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, Command, CommandResult, Precondition
from tests.firewall_corpus import CORPUS, load_captured, load_cases

CASES = [c for c in load_cases() if c.expected_file.exists()]


def _context(case) -> AnalysisContext:
    a = case.expected()["addresses"]
    return AnalysisContext(INBOUND_PORTS, OUTBOUND_PORTS, a["prober"], a["prober6"], a["host"], a["host6"],
                           inbound_iface="eth0", families=("ipv4", "ipv6"), host_addrs=(a["host"], a["host6"]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_block_has_one_owner_and_no_note_points_at_another_plan(case):
    results = load_captured(case.captured_dir)
    analysis = analyze(results, context=_context(case))
    planners = planners_for(results, _context(case))
    for key, v in analysis.decisions.items():
        if v.verdict == "block":
            owner = owner_of(planners, decided_at(v))
            assert owner is not None, f"{key}: nobody edits {v.blocked_by}"
    for finding in analysis.findings:
        assert "see the " not in finding.evidence and "no mailcheck fix edits" not in finding.evidence
    for fix in analysis.fixes:  # each fix comes from the planner that owns every port it opens
        owners = {owner_of(planners, decided_at(analysis.decisions[k])).name for k in fix.expected_allow}
        assert owners == {fix.backend.replace("ip6tables", "iptables")}, (fix.id, owners)


def test_a_front_end_owns_its_chains_and_the_manual_rule_stays_iptables():
    case = next(c for c in CASES if c.name == "ufw_with_manual_iptables_drop")
    analysis = analyze(load_captured(case.captured_dir), context=_context(case))
    assert analysis.backend == "ufw"
    assert [(f.backend, f.expected_allow) for f in analysis.fixes] == [("iptables", [("inbound", "ipv4", 587)])]


# --- a backend the product does not have: its module (here) + one registry line -----------------

@dataclass(frozen=True)
class ToyChange:
    ports: tuple[int, ...]
    reason: str


class ToyPlanner(Planner):
    """'toyfw': a front-end that owns the INPUT policy of iptables' filter table and rebuilds iptables."""

    name = "toyfw"
    reads = (Command(("toyfw", "status")),)
    frontend = True

    def __init__(self, on: bool) -> None:
        self.active = on

    @classmethod
    def for_host(cls, results, context):
        r = results.get(("toyfw", "status"))
        return cls(r is not None and r.ok and r.stdout.strip() == "on")

    def owns(self, at):
        return at.table.source != "nft" and at.chain.name == "INPUT" and at.rule is None

    def keeps(self, table):
        return self.active and table.source != "nft"

    def change_for(self, pv, ports, attempt, ends):
        return ToyChange(tuple(ports), f"toyfw open {','.join(map(str, ports))}") if attempt == 0 else "no"

    def apply(self, ruleset, change):  # toyfw opens a port in both families, at the end of INPUT
        words = ["-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, change.ports)), "-j", "ACCEPT"]
        for table in ruleset.tables:
            if table.source != "nft" and table.name == "filter" and "INPUT" in table.chains:
                table.chains["INPUT"].rules.append(parse_rule(words, " ".join(["-A", "INPUT", *words]), table))

    def commands(self, change):
        return [["toyfw", "open", str(p)] for p in change.ports], [["toyfw", "close", str(p)] for p in change.ports]

    def preconditions(self, ruleset, changes, notes):
        return [Precondition(argv=["toyfw", "status"], description="toyfw is on")]


def test_a_new_backend_needs_only_its_module_and_the_registry(monkeypatch):
    monkeypatch.setattr(registry, "PLANNERS", (*registry.PLANNERS, ToyPlanner))
    assert Command(("toyfw", "status")) in collect_commands()
    case = next(c for c in CASES if c.name == "guide_policy_drop_ssh_only")  # INPUT and OUTPUT policy DROP
    results = load_captured(CORPUS / case.name / "captured")
    results[("toyfw", "status")] = CommandResult(Command(("toyfw", "status")), 0, "on\n", "")
    analysis = analyze(results, context=_context(case))
    assert analysis.backend == "toyfw"
    by_backend = {f.backend: f for f in analysis.fixes}
    toy = by_backend["toyfw"]
    assert toy.commands == [["toyfw", "open", str(p)] for p in (25, 143, 465, 587, 993)]
    assert {k for k in toy.expected_allow if k[0] == "inbound"} == {("inbound", "ipv4", p) for p in INBOUND_PORTS}
    ipt = by_backend["iptables"]  # OUTPUT stays iptables', and is not persisted behind toyfw's back
    assert {k[0] for k in ipt.expected_allow} == {"outbound"} and not ipt.persist
    without = analyze(load_captured(CORPUS / case.name / "captured"), context=_context(case))
    assert [f.backend for f in without.fixes] == ["iptables"]  # toyfw not on: nothing changes
