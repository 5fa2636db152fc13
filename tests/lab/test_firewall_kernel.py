"""The corpus, live: load each case's ruleset into a fresh host, probe, and compare.

Two comparisons per case: the kernel today against the recorded verdicts (the
corpus is not stale), and the evaluator on freshly collected output against
the kernel (the model is right on what a host shows now).
"""

from __future__ import annotations

import pytest

from tests.firewall_corpus import (
    addresses_of,
    load_cases,
    mismatches,
    outcome_verdict,
    run_case,
)

pytestmark = pytest.mark.lab
CASES = [c for c in load_cases() if c.expected_file.exists()]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kernel_and_model_agree_live(request, lab, case):
    if case.model_gap:
        request.applymarker(pytest.mark.xfail(reason=case.model_gap, strict=True))
    host = lab()
    outcomes, results = run_case(host, case)
    kernel = {k: outcome_verdict(o) for k, o in outcomes.items()}
    assert kernel == case.expected()["kernel"], "the kernel no longer gives the recorded verdicts"
    assert mismatches(case, kernel, {r.command.argv: r for r in results}, addresses_of(host)) == []
