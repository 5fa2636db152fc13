"""Apply each planned iptables / ufw fix in a real host: ports open, SSH kept, nothing else touched.

For every corpus case (iptables and ufw backends) whose plan has fixes: load
the ruleset into a fresh host, plan on freshly collected output, check the
preconditions on the host, run the commands (plain `ip netns exec`: the
approval path is tested elsewhere), probe again, compare the rules before and
after (only the planned lines differ), then run the rollback and get the
exact rules back.
"""

from __future__ import annotations

import hashlib
import shlex
from collections import Counter

import pytest

from bot.firewall.parse.iptables import normalize_iptables_save
from tests.firewall_corpus import (
    addresses_of,
    collect,
    kernel_outcomes,
    key,
    load_cases,
    outcome_verdict,
    plan_fixes,
    run_case,
)

pytestmark = pytest.mark.lab
CASES = [c for c in load_cases() if c.expected_file.exists() and c.backend in ("iptables", "ufw")
         and any(v == "block" and not k.endswith("/22") for k, v in c.expected()["kernel"].items())
         and not c.model_gap]
SAVES = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save")


def _rules(host) -> dict[str, list[str]]:
    return {s: normalize_iptables_save(host.sh(s, check=False).stdout).splitlines() for s in SAVES}


def _ssh_login(host, six: bool = False) -> int:
    """A real SSH login from outside (pinned host key), as the operator's next session would be."""
    import subprocess

    target = host.ip6 if six else host.ip
    return subprocess.run(
        ["ssh", "-i", str(host.client_key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         "-o", f"UserKnownHostsFile={host.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         f"root@{target}", "true"], capture_output=True, timeout=30).returncode


def _check_preconditions(host, fix) -> None:
    for pre in fix.preconditions:
        r = host.sh(*pre.argv, check=False)
        if pre.expect_exit is not None:
            assert r.returncode == pre.expect_exit, f"precondition {pre.argv}: exit {r.returncode}"
        if pre.expect_sha256:
            text = normalize_iptables_save(r.stdout) if pre.normalize == "iptables-save" else r.stdout
            assert hashlib.sha256(text.encode()).hexdigest() == pre.expect_sha256, f"precondition {pre.argv}"


def _only_planned_lines_changed(before, after, fixes) -> None:
    for save in SAVES:
        gone = Counter(before[save]) - Counter(after[save])
        new = Counter(after[save]) - Counter(before[save])
        for line in [*gone, *new]:
            assert line.startswith("-A "), f"{save}: a chain or table changed: {line}"
            words = shlex.split(line)[1:]
            planned = any(w in line for w in ("mailcheck", "ufw-user-", "ufw6-user-"))
            deleted = any(c[3:5] == ["-D", words[0]] and c[5:] == words[1:] for f in fixes for c in f.commands
                          if f.backend != "ufw")
            assert planned or (deleted and line in gone), f"{save}: unplanned change: {line}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_planned_fix_opens_ports_and_touches_nothing_else(lab, case):
    host = lab()
    outcomes, results = run_case(host, case)
    kernel = {k: outcome_verdict(o) for k, o in outcomes.items()}
    _, plan = plan_fixes({r.command.argv: r for r in results}, addresses_of(host))
    if case.no_fix:  # the case says why nothing may be planned: check that nothing is
        assert not plan.fixes, f"{case.name}: expected no fix ({case.no_fix})"
        return
    assert plan.fixes, "blocked ports but no fix: " + "; ".join(plan.notes)
    before = _rules(host)
    for fix in plan.fixes:
        _check_preconditions(host, fix)
    for fix in plan.fixes:
        for argv in fix.commands + fix.persist:
            r = host.sh(*argv, check=False)
            assert r.returncode == 0, f"{argv}: {r.stderr}"
    after_kernel = {k: outcome_verdict(o) for k, o in kernel_outcomes(host).items()}
    for fix in plan.fixes:
        for k in fix.expected_allow:
            assert after_kernel[key(*k)] == "allow", f"{fix.id}: {k} still blocked"
    for k, v in kernel.items():  # (keys the case calls uncertain, e.g. -m recent on 22, excepted)
        if not case.may_be_unknown(k):
            assert v != "allow" or after_kernel[k] == "allow", f"{k} was allowed and is not any more"
    for six, family in ((False, "ipv4"), (True, "ipv6")):
        if kernel[f"inbound/{family}/22"] == "allow" and not case.may_be_unknown(f"inbound/{family}/22"):
            assert _ssh_login(host, six) == 0, f"SSH login over {family} fails after the fix"
    _only_planned_lines_changed(before, _rules(host), plan.fixes)
    for fix in reversed(plan.fixes):
        for argv in fix.rollback:
            r = host.sh(*argv, check=False)
            assert r.returncode == 0, f"rollback {argv}: {r.stderr}"
    assert _rules(host) == before, "the rollback did not restore the exact rules"
    assert collect(host)  # the host still answers
