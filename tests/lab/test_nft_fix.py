"""nft and firewalld fix plans applied in real lab hosts.

Each nft corpus case is loaded into a fresh host; the plan is made from what
the host shows (`nft -j list ruleset`, `nft -a list ruleset`, firewall-cmd);
its preconditions are checked live, its commands run inside the host, and
the kernel is probed again: the ports the plan promised are open, SSH is as
reachable as before, every rule that was there is still there with its
handle; the rollback then restores the exact ruleset. The persist step is run
against a file in the host's workdir (never the machine's /etc) and the file
it writes is loaded into another fresh host: the same rules come back.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from bot.firewall.parse.firewalld import firewalld_commands, parse_firewalld
from bot.firewall.parse.nft import normalize_nft
from bot.firewall.plan.firewalld import plan_firewalld
from bot.firewall.plan.nft import plan_nft
from tests.firewall_corpus import (
    addresses_of,
    endpoints,
    kernel_outcomes,
    key,
    load_cases,
    mail_keys,
    model_verdicts,
    outcome_verdict,
    parse_results,
    run_case,
)

pytestmark = pytest.mark.lab
CASES = [c for c in load_cases() if c.name.startswith("nft-") and c.expected_file.exists()]
OURS = re.compile(r'comment "mailcheck-[0-9a-f]+"')


def listing(host) -> str:
    return host.sh("nft", "-a", "list", "ruleset").stdout


def others(text: str) -> str:
    """The ruleset without the rules mailcheck added (normalised): what must stay untouched."""
    return "".join(ln + "\n" for ln in normalize_nft(text).splitlines() if not OURS.search(ln))


def plan_for(host, case, results):
    ruleset = parse_results({r.command.argv: r for r in results})
    ends = endpoints(addresses_of(host))
    if case.backend == "firewalld":
        out = {argv: host.sh("env", "LANG=C", *argv, check=False) for argv in firewalld_commands()}
        state = out[firewalld_commands()[0]]
        status = parse_firewalld((state.stdout, state.returncode), *(out[a].stdout for a in firewalld_commands()[1:]))
        return plan_firewalld(ruleset, status, mail_keys(), ends)
    return plan_nft(ruleset, mail_keys(), ends, listing=listing(host))


def check_preconditions(host, fix) -> None:
    for pre in fix.preconditions:
        r = host.sh(*pre.argv, check=False)
        assert r.returncode == (pre.expect_exit or 0), (pre.argv, r.stderr)
        text = normalize_nft(r.stdout) if pre.normalize == "nft" else r.stdout
        assert hashlib.sha256(text.encode()).hexdigest() == pre.expect_sha256, pre.description


def run_all(host, commands) -> None:
    for argv in commands:
        r = host.sh(*argv, check=False)
        assert r.returncode == 0, (argv, r.stderr)


def promised_keys(plan) -> list[tuple[str, str, int]]:
    return [k for fix in plan.fixes for k in fix.expected_allow]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nft_plan_applied_in_a_real_host(lab, case):
    host = lab()
    outcomes, results = run_case(host, case)
    plan = plan_for(host, case, results)
    if case.no_fix:  # the case says why nothing may be planned: check that nothing is
        assert not plan.fixes, f"{case.name}: expected no fix ({case.no_fix})"
        return
    assert plan.fixes, "blocked ports but no fix: " + "; ".join(plan.notes)
    before = listing(host)
    ssh_before = {six: host.probe(22, six=six) for six in (False, True)}
    for fix in plan.fixes:
        check_preconditions(host, fix)
        run_all(host, fix.commands)
    seen = kernel_outcomes(host)
    for fix in plan.fixes:
        for d, f, p in fix.expected_allow:
            assert outcome_verdict(seen[key(d, f, p)]) == "allow", (fix.summary, d, f, p, seen[key(d, f, p)])
    # nothing got worse; nothing the plan did not promise changed (except where the model said unknown)
    promised = {key(*k) for fix in plan.fixes for k in fix.expected_allow}
    model = model_verdicts({r.command.argv: r for r in results}, addresses_of(host))
    for k, was in outcomes.items():
        assert not (outcome_verdict(was) == "allow" and outcome_verdict(seen[k]) != "allow"), (k, was, seen[k])
        if k not in promised and model[k].verdict != "unknown":
            assert outcome_verdict(seen[k]) == outcome_verdict(was), (k, was, seen[k])
    assert {six: host.probe(22, six=six) for six in (False, True)} == ssh_before
    if case.backend == "nft":
        assert others(listing(host)) == others(before), "rules that were there changed"
    else:  # firewalld: the permanent half (in the host's own copy of /etc/firewalld) survives a reload
        for fix in plan.fixes:
            run_all(host, [*fix.persist, ["firewall-cmd", "--reload"]])
        again = kernel_outcomes(host)
        assert all(outcome_verdict(again[key(*k)]) == "allow" for k in promised_keys(plan)), again
    for fix in plan.fixes:
        run_all(host, fix.rollback if case.backend == "firewalld" else fix.rollback[: len(fix.commands)])
    # (firewalld's --reload rebuilt its table: same rules, new handles)
    strip = (lambda t: re.sub(r" # handle \d+", "", t)) if case.backend == "firewalld" else (lambda t: t)
    assert strip(normalize_nft(listing(host))) == strip(normalize_nft(before)), "the rollback did not restore it"


PERSIST_CASES = [c for c in CASES if c.backend == "nft" and c.name in (
    "nft-debian-default-mail-drop", "nft-user-chains-jump-goto-return", "nft-plus-iptables-nft")]


@pytest.mark.parametrize("case", PERSIST_CASES, ids=[c.name for c in PERSIST_CASES])
def test_persisted_file_reloads_the_fixed_ruleset(lab, case):
    host = lab()
    _, results = run_case(host, case)
    plan = plan_for(host, case, results)
    fix = plan.fixes[0]
    run_all(host, fix.commands)
    target = host.workdir / "nftables.conf"
    target.write_text("# the admin's old file\n")
    script = fix.persist[0][2].replace("/etc/nftables.conf", str(target))
    r = host.sh("sh", "-c", script, check=False)
    assert r.returncode == 0, r.stderr
    assert list(host.workdir.glob("nftables.conf.mailcheck-*"))[0].read_text() == "# the admin's old file\n"
    written = target.read_text()
    undo = fix.rollback[-1][2].replace("/etc/nftables.conf", str(target))
    assert host.sh("sh", "-c", undo, check=False).returncode == 0
    assert target.read_text() == "# the admin's old file\n"  # the rollback put the old file back
    target.unlink()  # and with no file before: the rollback removes the one it wrote
    assert host.sh("sh", "-c", script, check=False).returncode == 0
    assert host.sh("sh", "-c", undo, check=False).returncode == 0 and not target.exists()
    target.write_text(written)
    fresh = lab()
    if case.name == "nft-plus-iptables-nft":  # iptables-nft's tables are not in the file: load them as before
        run_all(fresh, [a for a in case.setup if a[0] != "nft"])
    r = fresh.sh("nft", "-f", str(target), check=False)
    assert r.returncode == 0, r.stderr
    native = [t for t in re.findall(r"^table (\S+ \S+)", listing(host), re.M)]
    for table in native:
        if case.name == "nft-plus-iptables-nft" and table.endswith(" filter"):
            continue
        fam, name = table.split()
        want = host.sh("nft", "list", "table", fam, name).stdout
        got = fresh.sh("nft", "list", "table", fam, name).stdout
        assert normalize_nft(got) == normalize_nft(want)
