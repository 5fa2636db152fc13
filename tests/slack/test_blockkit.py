"""The report message answers first and holds Slack's limits, whatever the report holds."""

from __future__ import annotations

import json

import pytest

from bot.models import Finding, Fix, PortStatus, Report, StepResult
from bot.render import blockkit, details
from bot.render import report as render
from tests import guide_case
from tests.slack.fake_slack import MAX_BLOCKS, MAX_MODAL_BLOCKS, _texts, check_blocks

BUDGET_BLOCKS, BUDGET_CHARS = 10, 2_500


def huge_report(n_findings: int = 300, n_fixes: int = 40, evidence: int = 100_000) -> Report:
    fixes = [Fix(id=f"fix-{i}", kind="firewall", summary="Allow inbound SMTP " + "x" * 200,
                 label="Open 25 in " + "y" * 100,
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
        findings=[Finding(code="c", severity="critical", summary="f" * 4000, evidence="z" * 9000,
                          fixes=[fixes[i % n_fixes].id] if n_fixes and i % 2 else [])
                  for i in range(n_findings)],
        fixes=fixes)


def buttons(blocks: list[dict]) -> list[dict]:
    out = [b["accessory"] for b in blocks if b.get("accessory")]
    return out + [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def assert_message_ok(blocks: list[dict], max_blocks: int = BUDGET_BLOCKS) -> None:
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert len(blocks) <= max_blocks
    assert blockkit.size(blocks) <= blockkit.MESSAGE_BUDGET


async def test_guide_case_message_within_budget_cause_first_with_its_fix_beside_it():
    report = await guide_case.report()
    plan_ids = {f.id: f"p_{f.id}" for f in report.fixes}
    blocks = render.report_blocks(report, plan_ids, "r_1")
    size, text_chars = blockkit.size(blocks), sum(len(t) for t in _texts(blocks))
    print(f"guide case message: {len(blocks)} blocks, {size} JSON characters, {text_chars} of text")
    assert len(blocks) <= BUDGET_BLOCKS and size <= BUDGET_CHARS  # all of the JSON, not only text
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == ":x: mx1: mail cannot flow · 2 causes"
    first = blocks[2]  # right under the verdict: the first cause, its fix beside it
    assert first["text"]["text"].startswith(
        ":x: *iptables INPUT rule 2 drops inbound 25,143,465,587,993 (IPv4)*")
    assert "iptables OUTPUT rule 1 drops outbound 25,465,587 (IPv4)" in first["text"]["text"]
    fix = first["accessory"]
    assert fix["text"]["text"] == "Delete INPUT rule 2 + OUTPUT rule 1"
    assert fix["value"] == plan_ids[report.fixes[0].id]
    confirm = fix["confirm"]["text"]["text"]
    assert "$ iptables -t filter -D INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP" in confirm
    assert "$ iptables -t filter -D OUTPUT" in confirm
    text = json.dumps(blocks, ensure_ascii=False)
    assert "```" not in text and "Port 25/IPv4 is filtered" not in text  # no evidence, no symptom
    assert "5 symptoms seen from outside" in text
    grid = next(b for b in blocks if b.get("fields"))
    assert [f["text"] for f in grid["fields"]] == [
        "*In · IPv4*  :x: 25 465 587 143 993", "*In · IPv6*  :white_check_mark: 25 465 587 143 993",
        "*Out · IPv4*  :x: 25 465 587", "*Out · IPv6*  :white_check_mark: 25 465 587"]
    assert [(b["action_id"], b["value"]) for b in blocks[-1]["elements"]] == [
        (blockkit.ACTION_RECHECK, "mx1"), (blockkit.ACTION_DETAILS, "r_1")]


def test_a_huge_report_fits_in_ten_blocks_and_counts_what_it_leaves_out():
    report = huge_report()
    plan_ids = {f.id: f"p_{i:04d}" for i, f in enumerate(report.fixes)}
    blocks = render.report_blocks(report, plan_ids, "d_1")
    assert_message_ok(blocks)
    els = buttons(blocks)
    applies = [e for e in els if e["action_id"].startswith(blockkit.ACTION_APPLY)]
    assert applies and {e["value"] for e in applies} <= set(plan_ids.values())  # ids only
    assert len({e["action_id"] for e in els}) == len(els)  # Slack wants unique action ids
    assert "and 295 more causes: *Details* lists them all" in json.dumps(blocks)
    assert all(len(e["text"]["text"]) <= 75 for e in els)
    assert all(len(e["confirm"]["text"]["text"]) <= 300 for e in applies)
    first = applies[0]["confirm"]["text"]["text"]  # its first command does not fit whole
    assert "\n$ " in first and first.endswith("(cut: the whole commands in Details)")


@pytest.mark.parametrize("evidence", [0, 10, 2_000, 20_000])
def test_reports_of_any_size_fit(evidence):
    for n in (0, 1, 5, 60):
        report = huge_report(n_findings=n, n_fixes=min(n, 3), evidence=evidence)
        assert_message_ok(render.report_blocks(report, {f.id: "p" for f in report.fixes}, "d"))
        assert_message_ok(render.progress_blocks(report))


def test_text_that_escapes_to_four_times_its_length_still_fits():
    angry = "<>&" * 2000  # each character becomes an entity of 4 or 5
    report = Report(host="mx1", address="a", findings=[
        Finding(code=f"c{i}", severity="error", summary=angry, evidence="rule " + angry,
                ports=[("inbound", "ipv4", 25)]) for i in range(7)])
    blocks = render.report_blocks(report, {}, "d")
    assert_message_ok(blocks)
    assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "actions"


def test_modal_holds_the_full_output_within_modal_limits():
    report = huge_report(n_findings=3, n_fixes=2, evidence=5_000)
    view = details.details_modal(report)
    assert len(view["blocks"]) <= MAX_MODAL_BLOCKS and check_blocks(view["blocks"], 100, None) == {}
    assert blockkit.size(view["blocks"]) <= blockkit.MODAL_BUDGET
    full = json.dumps(view["blocks"])
    assert full.count("line `\\u200b``") >= 500  # the whole 5,000 characters of tools evidence
    huge = details.details_modal(huge_report())
    assert len(huge["blocks"]) <= MAX_MODAL_BLOCKS
    assert blockkit.size(huge["blocks"]) <= blockkit.MODAL_BUDGET


async def test_details_has_the_evidence_per_step_and_what_each_symptom_is_caused_by():
    report = await guide_case.report()
    text = json.dumps(details.details_modal(report)["blocks"], ensure_ascii=False)
    assert "*Causes* (2)" in text and "*Symptoms* (5)" in text
    assert "_caused by: iptables INPUT rule 2 drops inbound" in text
    assert "-A INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP" in text  # evidence
    assert "*firewall* · fail" in text and "firewall in charge: iptables" in text
    assert "iptables -t filter -D INPUT" in text and "rollback:" in text


def test_a_fix_without_a_plan_has_no_button_and_a_cause_without_fix_stands_alone():
    fix = Fix(id="f1", kind="firewall", summary="Allow 25/tcp", label="Delete INPUT rule 1",
              commands=[["iptables", "-D", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP"]])
    report = Report(host="mx1", address="198.18.0.2",
                    findings=[Finding(code="fw", severity="error", summary="rule drops 25", fixes=["f1"]),
                              Finding(code="dns", severity="warning", summary="no PTR record")],
                    fixes=[fix])
    with_plan = render.report_blocks(report, {"f1": "p_1"}, "d_1")
    assert [(e["action_id"], e["value"]) for e in buttons(with_plan)] == [
        ("mailcheck_apply_0", "p_1"), ("mailcheck_recheck", "mx1"), ("mailcheck_details", "d_1")]
    no_plan = render.report_blocks(report, {}, None, note="storing the plans failed")
    assert [e["action_id"] for e in buttons(no_plan)] == [blockkit.ACTION_RECHECK]
    text = json.dumps(no_plan)
    assert "_Fix: Delete INPUT rule 1_" in text and "storing the plans failed" in text
    assert no_plan[0]["text"]["text"] == ":x: mx1: mail cannot flow · 2 causes"


def test_progress_shows_each_step_as_it_arrives_in_the_guides_order():
    done = [StepResult(name="tools", status="ok", summary="all there"),
            StepResult(name="firewall", status="fail",
                       summary="iptables, 2 rules block mail: inbound 25; outbound 25")]
    blocks = render.progress_blocks(Report(host="mx1", address="a", steps=done))
    text = json.dumps(blocks, ensure_ascii=False)
    assert len(blocks) == 2 and "mx1: checking" in text
    assert ":x: *firewall*: iptables, 2 rules block mail" in text
    assert "*services*: running" in text and "*conclusion*: waiting" in text
    where = [text.index(f"*{n}*:") for n in ("tools", "services", "ports", "firewall", "conclusion")]
    assert where == sorted(where)


def test_error_message_names_the_step():
    blocks = render.error_blocks("mx1", "x" * 10_000, "ports")
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert "step *ports*" in json.dumps(blocks)


def test_a_confirm_dialog_always_shows_a_command_cut_and_said_so_when_too_long():
    """A rule with a long comment makes its delete command longer than the dialog: the dialog
    still shows it, cut and saying so, instead of no command at all."""
    long = ["iptables", "-t", "filter", "-D", "INPUT", "-p", "tcp", "--dport", "25", "-m",
            "comment", "--comment", "x" * 400, "-j", "DROP"]
    fix = Fix(id="f", title="t", summary="Delete INPUT rule 2", kind="firewall",
              commands=[long, ["iptables-save"]])
    text = render.confirm_for(fix, "mx1").to_dict()["text"]["text"]
    assert len(text) <= 300 and "$ iptables -t filter -D INPUT -p tcp --dport 25" in text
    assert text.endswith("(cut: the whole commands in Details)"), text
