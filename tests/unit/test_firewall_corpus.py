"""Every corpus case: the evaluator on the captured output agrees with the kernel's recorded verdict.

The verdicts in tests/data/firewall/*/expected.json were given by the kernel
(a real probe in the lab, see tests/firewall_corpus.py), not reasoned out.
"""

from __future__ import annotations

import pytest

from tests.firewall_corpus import all_keys, load_captured, load_cases, mismatches, parse_results

CASES = [c for c in load_cases() if c.expected_file.exists()]


def _needs_parse_all(case) -> bool:
    from bot.firewall import api

    return case.backend in ("nft", "firewalld") and not hasattr(api, "parse_all")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_model_agrees_with_kernel(request, case):
    if _needs_parse_all(case):
        pytest.skip("nft/firewalld cases need bot.firewall.api.parse_all")
    if case.model_gap:
        request.applymarker(pytest.mark.xfail(reason=case.model_gap, strict=True))
    expected = case.expected()
    ruleset = parse_results(load_captured(case.captured_dir))
    assert mismatches(case, expected["kernel"], ruleset, expected["addresses"]) == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_is_complete(case):
    expected = case.expected()
    assert sorted(expected["kernel"]) == sorted(all_keys())
    assert case.description and case.setup
    assert (case.captured_dir / "commands.json").exists()


def test_corpus_is_not_empty():
    assert len(CASES) >= 2
