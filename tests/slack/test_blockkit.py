"""Block Kit limits hold on every message and modal, whatever the report holds."""

from __future__ import annotations

import json

import pytest

from bot.models import Finding, Fix, PortStatus, Report, StepResult
from bot.render import blockkit
from tests.slack.fake_slack import MAX_BLOCKS, MAX_MODAL_BLOCKS, check_blocks


def huge_report(n_findings: int = 300, n_fixes: int = 40, evidence: int = 100_000) -> Report:
    fixes = [Fix(id=f"fix-{i}", kind="firewall", summary="Allow inbound SMTP " + "x" * 200,
                 commands=[["iptables", "-I", "INPUT", str(j), "-p", "tcp", "--dport", "25",
                            "-m", "comment", "--comment", "c" * 80, "-j", "ACCEPT"]
                           for j in range(30)]) for i in range(n_fixes)]
    return Report(
        host="mx1", address="198.18.0.2",
        steps=[StepResult(name=s, status="fail", summary="s" * 5000, error="e" * 4000,
                          evidence=("line ```\n" * (evidence // 9))) for s in
               ("tools", "services", "ports", "firewall", "conclusion")],
        ports=[PortStatus(port=p, direction="inbound", blocked_by="-A INPUT " + "y" * 300)
               for p in range(1, 200)],
        findings=[Finding(code="c", severity="critical", summary="f" * 4000, evidence="z" * 9000)
                  for _ in range(n_findings)],
        fixes=fixes)


def assert_message_ok(blocks: list[dict], max_blocks: int = MAX_BLOCKS) -> None:
    assert check_blocks(blocks, max_blocks) == {}
    assert len(blocks) <= max_blocks
    assert blockkit.size(blocks) <= blockkit.MESSAGE_BUDGET


def test_a_huge_report_fits_and_keeps_every_button():
    report = huge_report()
    plan_ids = {f.id: f"p_{i:04d}" for i, f in enumerate(report.fixes)}
    blocks = blockkit.report_blocks(report, plan_ids, "d_1")
    assert_message_ok(blocks)
    els = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    applies = [e for e in els if e["action_id"].startswith(blockkit.ACTION_APPLY)]
    assert applies and {e["value"] for e in applies} <= set(plan_ids.values())  # ids only
    assert "more fix(es) have no button here" in json.dumps(blocks)
    assert all(len(e["text"]["text"]) <= 75 for e in els)
    assert all(len(e["confirm"]["text"]["text"]) <= 300 for e in applies)
    assert "more command(s), listed in the message" in applies[0]["confirm"]["text"]["text"]
    assert "left out to fit Slack's limits" in json.dumps(blocks)


@pytest.mark.parametrize("evidence", [0, 10, 2_000, 20_000])
def test_reports_of_any_size_fit(evidence):
    for n in (0, 1, 5, 60):
        report = huge_report(n_findings=n, n_fixes=min(n, 3), evidence=evidence)
        assert_message_ok(blockkit.report_blocks(report, {f.id: "p" for f in report.fixes}, "d"))
        assert_message_ok(blockkit.progress_blocks(report))


def test_modal_holds_the_full_output_within_modal_limits():
    report = huge_report(n_findings=3, n_fixes=2, evidence=5_000)
    view = blockkit.details_modal(report)
    assert len(view["blocks"]) <= MAX_MODAL_BLOCKS and check_blocks(view["blocks"], 100, None) == {}
    assert blockkit.size(view["blocks"]) <= blockkit.MODAL_BUDGET
    full = json.dumps(view["blocks"])
    assert full.count("line `\\u200b``") >= 500  # the whole 5,000 characters of tools evidence
    huge = blockkit.details_modal(huge_report())
    assert len(huge["blocks"]) <= MAX_MODAL_BLOCKS
    assert blockkit.size(huge["blocks"]) <= blockkit.MODAL_BUDGET


def test_small_report_shows_steps_findings_and_the_exact_commands():
    fix = Fix(id="f1", kind="firewall", summary="Allow 25/tcp",
              commands=[["iptables", "-D", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP"]])
    report = Report(host="mx1", address="198.18.0.2",
                    steps=[StepResult(name="firewall", status="fail", summary="25 blocked",
                                      evidence="-A INPUT -p tcp --dport 25 -j DROP")],
                    findings=[Finding(code="fw", severity="error", summary="25 dropped")],
                    fixes=[fix])
    blocks = blockkit.report_blocks(report, {"f1": "p_1"}, "d_1")
    text = json.dumps(blocks)
    assert blocks[0]["text"]["text"] == ":x: mx1: broken (1 problem)"
    assert "```\\n-A INPUT -p tcp --dport 25 -j DROP\\n```" in text
    assert "iptables -D INPUT -p tcp --dport 25 -j DROP" in text
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert [e["value"] for e in actions["elements"]] == ["p_1", "mx1", "d_1"]
    no_plan = blockkit.report_blocks(report, {}, None)  # unregistered fixes get no button
    assert [e["action_id"] for b in no_plan if b["type"] == "actions" for e in b["elements"]] \
        == [blockkit.ACTION_RECHECK]


def test_progress_shows_done_running_and_waiting():
    partial = Report(host="mx1", address="a", steps=[StepResult(name="tools", status="ok", summary="all there")])
    text = json.dumps(blockkit.progress_blocks(partial), ensure_ascii=False)
    assert "checking" in text and "*tools* · ok" in text
    assert "*services* · running" in text and "*conclusion* · waiting" in text


def test_progress_keeps_the_guides_order_when_a_later_step_finishes_first():
    done = [StepResult(name=n, status="ok", summary=f"{n} done") for n in ("tools", "services", "firewall")]
    text = json.dumps(blockkit.progress_blocks(Report(host="mx1", address="a", steps=done)),
                      ensure_ascii=False)
    where = [text.index(f"*{n}* ·") for n in ("tools", "services", "ports", "firewall", "conclusion")]
    assert where == sorted(where)
    assert "*ports* · running" in text and "*conclusion* · waiting" in text


def test_error_message_names_the_step():
    blocks = blockkit.error_blocks("mx1", "x" * 10_000, "ports")
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert "step *ports*" in json.dumps(blocks)
