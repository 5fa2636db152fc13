"""scripts/blockkit_html.py renders what mailcheck sends, and escaped text stays text."""

from __future__ import annotations

from bot.render import report as render
from scripts.blockkit_html import mrkdwn, page
from tests import guide_case


async def test_the_guide_case_page_shows_the_cause_its_button_and_the_dialog():
    report = await guide_case.report()
    html = page(render.report_blocks(report, {f.id: "p" for f in report.fixes}, "r"))
    assert "mx1: mail cannot flow · 2 causes" in html
    assert "<b>iptables INPUT rule 2 drops inbound 25,143,465,587,993 (IPv4)</b>" in html
    assert '<span class="button primary">Delete INPUT rule 2 + OUTPUT rule 1</span>' in html
    assert "Runs exactly:\n$ iptables -t filter -D INPUT" in html and "In · IPv6" in html


def test_mrkdwn_markup_and_escaped_text():
    assert mrkdwn("*b* _i_ `&lt;!channel&gt;` <@U1>") == (
        '<b>b</b> <i>i</i> <code>&lt;!channel&gt;</code> <span class="mention">@U1</span>')
    assert mrkdwn("```\na &lt;b&gt;\n```") == "<pre>a &lt;b&gt;</pre>"
