"""Text from the host never becomes Slack markup (issue 10, item 9).

A rule comment, a process name, log lines and an SMTP banner that try to notify the channel
(`<!channel>`), show a disguised link (`<https://x|Approve fix here>`) or end a code span (a
backtick) go through the real engine (recorded output of the guide's first case, altered as a
hostile host would) and every renderer: the Slack message, the progress message, the Details
modal, the notification text, the confirm dialog, a fix outcome, the terminal. In mrkdwn they
arrive escaped (`&lt;!channel&gt;`); plain text (a confirm dialog) is not parsed by Slack.
The same with real iptables and a real process on a lab host: tests/lab/test_slack_e2e.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

from bot.checks.daemon_logs import journal
from bot.checks.services import INSTALLED, SS
from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome, Snapshot
from bot.fixes.policy import Approvers
from bot.models import PortStatus
from bot.render import blockkit, details, outcomes
from bot.render import report as render
from bot.render.mrkdwn import Mrkdwn, block, esc, md, span
from tests import guide_case
from tests.firewall_corpus import load_captured
from tests.slack.fake_slack import live_markup, mrkdwn_texts

CHANNEL = "<!channel>"
LINK = "<https://x|Approve fix here>"
COMMENT = f"{CHANNEL} `rm -rf /` {LINK}"
PROCESS = "<!here>`*x*"
LOG = "2026-11-30 exim: <!everyone> please click <https://evil.example|the fix> ```"


def hostile_host() -> dict[tuple[str, ...], str]:
    """Outputs a hostile host gives: the mail rule with a comment, a listener's process name,
    exim's journal."""
    saved = load_captured(guide_case.CASE / "captured")[("iptables-save", "-c")].stdout
    rule = "-A INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP"
    hostile_rule = ("-A INPUT -p tcp -m multiport --dports 25,143,993,587,465 "
                    f"-m comment --comment \"{COMMENT}\" -j DROP")
    assert rule in saved
    ss = guide_case.SS_OUT.replace('"exim4"', f'"{PROCESS}"')
    return {("iptables-save", "-c"): saved.replace(rule, hostile_rule), SS: ss, journal("exim4"): LOG}  # exim's own unit


def assert_no_live_markup(obj, where: str) -> None:
    assert live_markup(obj) == [], f"{where}: {live_markup(obj)}"


def spans_hold(text: str) -> None:
    """Every inline code span closes where it should: an even number of backticks per line,
    once code blocks are taken out."""
    for line in re.sub(r"```.*?```", "", text, flags=re.S).splitlines():
        assert line.count("`") % 2 == 0, line


async def test_hostile_rule_comment_and_process_name_stay_text_in_every_slack_surface():
    report = await guide_case.report(extra=hostile_host())
    assert any(COMMENT in (p.blocked_by or "") for p in report.ports)  # it did reach the report
    assert any(PROCESS in (p.process or "") for p in report.ports)
    plan_ids = {f.id: "p_1" for f in report.fixes}
    surfaces = {
        "message": render.report_blocks(report, plan_ids, "r_1"),
        "progress": render.progress_blocks(report),
        "details": details.details_modal(report),
        "notification": {"text": render.fallback_text(report, "mx1")},
    }
    for where, obj in surfaces.items():
        assert_no_live_markup(obj, where)
        for text in mrkdwn_texts(obj):
            spans_hold(text)
    all_mrkdwn = json.dumps([mrkdwn_texts(o) for o in surfaces.values()])
    assert "&lt;!channel&gt;" in all_mrkdwn and "&lt;https://x|Approve fix here&gt;" in all_mrkdwn
    assert "&lt;!here&gt;" in all_mrkdwn  # the process name, in Details' port table
    fix = next(b["accessory"] for b in surfaces["message"] if b.get("accessory"))
    assert fix["confirm"]["text"]["type"] == "plain_text"  # Slack parses nothing there
    assert COMMENT in fix["confirm"]["text"]["text"] or "more command" in fix["confirm"]["text"]["text"]
    assert "Approve fix here" not in fix["text"]["text"]  # the button says what it does


async def test_hostile_log_lines_of_a_daemon_that_is_down():
    extra = hostile_host()
    extra[SS] = "\n".join(line for line in guide_case.SS_OUT.splitlines() if "exim4" not in line)
    extra[INSTALLED] = "/usr/sbin/exim4\n/usr/sbin/dovecot\n"
    report = await guide_case.report(extra=extra)
    down = [f for f in report.findings if f.code == "service.down"]
    assert down and LOG.split("```")[0] in down[0].evidence
    modal = details.details_modal(report)
    assert_no_live_markup(modal, "details")
    assert "&lt;!everyone&gt;" in json.dumps(modal)
    assert_no_live_markup(render.report_blocks(report, {}, "r_1"), "message")


def test_fix_outcomes_escape_the_host_text_and_mention_only_user_ids():
    summary = f"iptables: open inbound 25/IPv4: delete `-A INPUT -m comment --comment \"{COMMENT}\"`"
    out = ApplyOutcome("not_achieved", f"stderr: {LINK}", "p_1", host="mx1", summary=summary,
                       actor="U0BOB", change_id="c_1", at=0,
                       before=Snapshot(ports=[PortStatus(port=25, direction="inbound", process=PROCESS)]))
    blocks = outcomes.applied_blocks([], "mailcheck_apply_0", "p_1", out, "U0BOB")
    assert live_markup(blocks) == ["<@U0BOB>"]
    texts = [outcomes.apply_text(out, "U0EVE"), outcomes.applied_text(out, "U0EVE"),
             outcomes.break_glass_text(replace(out, break_glass_reason=f"{CHANNEL} outage"))]
    assert [live_markup({"text": t}) for t in texts] == [["<@U0EVE>"], ["<@U0BOB>"], ["<@U0BOB>"]]
    refused = replace(out, status="refused", approvers=Approvers(frozenset({"U0ALICE"}),
                                                              frozenset({"S0OPS", "<!channel>"})))
    assert live_markup({"text": outcomes.apply_text(refused, "U0EVE")}) == [
        "<@U0EVE>", "<@U0ALICE>", "<!subteam^S0OPS>"]  # a malformed group id stays text
    rolled = RollbackOutcome("rolled_back", f"{LINK}", "c_1", host="mx1", actor=CHANNEL, at=0)
    assert live_markup(outcomes.rolled_back_blocks([], "a", "c_1", rolled, "U0BOB")) == []


def test_the_escaping_primitives():
    assert esc("a & <b> >") == "a &amp; &lt;b&gt; &gt;"
    assert esc(esc("<x>")) == "&lt;x&gt;"  # escaped once, never twice
    assert md("*{}* {}", "<!here>", Mrkdwn("<@U1>")) == "*&lt;!here&gt;* <@U1>"
    assert span("a`b\nc") == "`aˋb c`" and span("") == ""
    assert block("x```y", 100) == "```\nx`\u200b``y\n```"
    assert Mrkdwn("a ") + "<b>" == "a &lt;b&gt;"
    assert Mrkdwn(", ").join(["<a>", Mrkdwn("<@U1>")]) == "&lt;a&gt;, <@U1>"
    assert json.loads(json.dumps(blockkit.section("<!channel>")))["text"]["text"] == "&lt;!channel&gt;"


async def test_what_a_restart_found_reaches_the_channel_escaped():
    """reconcile's message carries the host's rulesets (a rule's comment) to the plan's channel."""
    from bot.fixes.evidence import left_on_host
    from bot.fixes.reconcile import Reconciled
    from bot.slack.server import announce_reconciled

    before = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    after = before.replace("COMMIT", f'-A INPUT -m comment --comment "{COMMENT}" -j ACCEPT\nCOMMIT')
    found = Reconciled("p_1", "mx1", "C1", "unreachable", "no guard was armed; "
                       + left_on_host(before, after), "c_1")

    class Service:
        async def reconcile(self):
            return [found]

    class Poster:
        posted: list[dict] = []

        async def call(self, method, **kw):
            self.posted.append(kw)

    poster = Poster()
    await announce_reconciled(Service(), poster)
    [msg] = poster.posted
    assert "&lt;!channel&gt;" in msg["text"] and "*unreachable*" in msg["text"], msg["text"]
    assert_no_live_markup(msg, "the reconcile announcement")
