"""Every corpus case: the evaluator on the captured output agrees with the kernel's recorded verdict.

The verdicts in tests/data/firewall/*/expected.json were given by the kernel
(a real probe in the lab, see tests/firewall_corpus.py), not reasoned out.
"""

from __future__ import annotations

import pytest

from tests.firewall_corpus import (
    all_keys,
    key,
    load_captured,
    load_cases,
    mismatches,
    model_verdicts,
)

CASES = [c for c in load_cases() if c.expected_file.exists()]
CONTAINER_CASES = [c for c in CASES if c.container]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_model_agrees_with_kernel(request, case):
    if case.model_gap:
        request.applymarker(pytest.mark.xfail(reason=case.model_gap, strict=True))
    expected = case.expected()
    assert mismatches(case, expected["kernel"], load_captured(case.captured_dir), expected["addresses"]) == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_is_complete(case):
    expected = case.expected()
    assert sorted(expected["kernel"]) == sorted(all_keys())
    assert case.description and (case.setup or case.container or case.fail2ban)
    assert (case.captured_dir / "commands.json").exists()


@pytest.mark.parametrize("case", CONTAINER_CASES, ids=[c.name for c in CONTAINER_CASES])
def test_container_case_records_the_kernels_path(case):
    """Each published port: the kernel DNATed it to the container and decided in FORWARD."""
    expected = case.expected()
    paths = expected["paths"]
    assert sorted(paths) == sorted(key("inbound", "ipv4", p) for p in case.published)
    for k, path in paths.items():
        assert path["outcome"] == expected["outcomes"][k]
        assert path["hook"] == "forward", (k, path)
        assert path["translated"] == f"198.19.{expected['addresses']['host'].split('.')[2]}.2:{k.split('/')[2]}"
        assert path["decided"], (k, path)
        verdict = "drop" if expected["kernel"][k] == "block" else "accept"
        assert verdict in path["decided"].lower(), (k, path["decided"])


def test_container_cases_are_modelled():
    """The evaluator walks nat PREROUTING and FORWARD (issue 11): no container case is a known gap."""
    assert len(CONTAINER_CASES) >= 13
    assert {c.model_gap for c in CONTAINER_CASES} == {""}
    engines = {(c.container["engine"], c.container.get("layout") or c.container.get("iptables")) for c in CONTAINER_CASES}
    assert {("dockerd", "nft"), ("dockerd", "legacy"), ("podman", None), ("netns", "docker28-iptables"),
            ("netns", "docker28-nftables"), ("netns", "netavark-nftables")} <= engines


@pytest.mark.parametrize("case", CONTAINER_CASES, ids=[c.name for c in CONTAINER_CASES])
def test_model_follows_the_kernels_path(case):
    """Each published port: the model translates it where the kernel did, decides it in the same
    hook, and names the rule or policy the kernel's trace (or counters, for legacy) shows."""
    expected = case.expected()
    verdicts = model_verdicts(load_captured(case.captured_dir), expected["addresses"])
    for k, path in expected["paths"].items():
        v = verdicts[k]
        assert v.forwarded == (path["hook"] == "forward") and v.dnat_to == path["translated"], (k, v)
        assert kernel_place(path["decided"]) == model_place(v), (k, path["decided"], v.blocked_by)


def kernel_place(decided: str) -> tuple:
    """nft trace 'ip filter DOCKER-USER rule ... (verdict drop)' -> (family, table, chain, 'rule'|'policy');
    legacy counters '(counters) iptables-legacy-save filter -A DOCKER ...' -> (table, rule text)."""
    if decided.startswith("(counters) "):
        _, _, table, text = decided.split(" ", 3)
        return (table, text)
    family, table, chain, kind = decided.split()[:4]
    return (family, table, chain, kind)


def model_place(v) -> tuple:
    d = v.deciding
    if d.table.source == "iptables-legacy":
        return (d.table.name, d.rule.text if d.rule else f":{d.chain.name} {d.chain.policy.upper()} policy")
    return (d.table.family, d.table.name, d.chain.name, "rule" if d.rule else "policy")


def test_corpus_is_not_empty():
    assert len(CASES) >= 2


# The guide's sample `iptables -L -v -n --line-numbers` rows (counters dropped): the lab cases
# reproduce exactly these rulesets, so the kernel verdicts recorded for them are the guide's.
GUIDE_LISTINGS = {
    "guide_policy_accept_multiport_drop": {
        "INPUT (policy ACCEPT)": ["1 DROP 6 -- * * 0.0.0.0/0 0.0.0.0/0 tcp multiport dports 22",
                                  "2 DROP 6 -- * * 0.0.0.0/0 0.0.0.0/0 tcp multiport dports 25,143,993,587,465"],
        "FORWARD (policy ACCEPT)": [],
        "OUTPUT (policy ACCEPT)": ["1 DROP 6 -- * * 0.0.0.0/0 0.0.0.0/0 tcp multiport dports 25,143,993,587,465"],
    },
    "guide_policy_drop_ssh_only": {
        "INPUT (policy DROP)": ["1 ACCEPT 0 -- * * 0.0.0.0/0 0.0.0.0/0 state RELATED,ESTABLISHED",
                                "2 ACCEPT 6 -- * * 0.0.0.0/0 0.0.0.0/0 tcp dpt:22"],
        "FORWARD (policy ACCEPT)": [],
        "OUTPUT (policy DROP)": ["1 ACCEPT 0 -- * * 0.0.0.0/0 0.0.0.0/0 state RELATED,ESTABLISHED"],
    },
}


def _listing(text: str) -> dict[str, list[str]]:
    """`iptables -L -v -n --line-numbers` -> {'INPUT (policy DROP)': ['1 ACCEPT 0 -- ...']} without counters."""
    chains: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if line.startswith("Chain "):
            current = f"{words[1]} (policy {words[3]})"
            chains[current] = []
        elif words and words[0].isdigit() and current:
            # iptables 1.8.9 omits the "tcp" that older versions print before "multiport"
            rest = " ".join(words[3:]).replace(" 0.0.0.0/0 multiport", " 0.0.0.0/0 tcp multiport")
            chains[current].append(f"{words[0]} {rest}")
    return chains


@pytest.mark.parametrize("name", sorted(GUIDE_LISTINGS))
def test_lab_cases_are_the_guides_rulesets(name):
    case = next(c for c in CASES if c.name == name)
    text = (case.captured_dir / "iptables_-L_-v_-n_--line-numbers.txt").read_text()
    assert _listing(text) == GUIDE_LISTINGS[name]
