"""`mailcheck check` in a terminal (issue 13, item 7): each step once, then the causes and
their fixes in Slack's order, colour only on a terminal; a host's control characters are
shown, never sent to the terminal."""

from __future__ import annotations

import argparse
import io
import re

from bot.cli import cmd_check
from bot.console import Console
from bot.diagnosis import answer
from bot.render import report as slack
from bot.render import terminal
from bot.wiring import Wiring
from config.settings import Settings
from tests import guide_case

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def run_check(monkeypatch, out: io.StringIO) -> tuple[str, str, int]:
    err = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("NO_COLOR", raising=False)
    wiring = Wiring(Settings(_env_file=None, inventory=None), guide_case.inventory(),
                    engine=guide_case.engine())
    args = argparse.Namespace(target="mx1", identity=None, known_hosts=None, local=False,
                              outbound_targets=None, step=None, json=False)
    code = await cmd_check(args, Console(wiring, out=out))
    return out.getvalue(), err.getvalue(), code


async def test_each_step_once_then_the_causes_and_their_fix_in_slacks_order(monkeypatch):
    text, err, code = await run_check(monkeypatch, io.StringIO())
    assert code == 1 and "checking mx1" in err
    assert not ANSI.search(text)  # not a terminal: no colour
    for step in ("tools", "services", "ports", "firewall", "conclusion"):
        assert len(re.findall(rf"^\[....\] {step}: ", text, re.M)) == 1, step
    assert "[FAIL] firewall: iptables, 2 rules block mail" in text
    report = await guide_case.report()
    causes = [c.summary for c in answer(report).causes]
    where = [text.index(c) for c in causes]
    assert where == sorted(where) and where[0] < text.index("Symptoms (5)")
    fix_at = text.index("fix (1, 2): Delete INPUT rule 2 + OUTPUT rule 1")
    assert where[-1] < fix_at < text.index("Symptoms (5)")
    assert "$ iptables -t filter -D INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP" in text
    assert "mailcheck fix mx1 " + report.fixes[0].id in text
    blocks = slack.report_blocks(report, {f.id: "p" for f in report.fixes}, "r")
    slack_order = [c for c in causes if c in blocks[2]["text"]["text"]]
    assert slack_order == causes  # the same causes, in the same order
    assert text.count("Port 25/IPv4 is filtered from outside") == 1  # a symptom, listed once


async def test_colour_on_a_terminal_unless_no_color(monkeypatch):
    text, _, _ = await run_check(monkeypatch, Tty())
    assert "\x1b[31m[FAIL]\x1b[0m firewall:" in text and "\x1b[31mmx1 (198.18.7.2): mail cannot flow" in text
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    monkeypatch.setattr("sys.stdout", out)
    wiring = Wiring(Settings(_env_file=None, inventory=None), guide_case.inventory(),
                    engine=guide_case.engine())
    args = argparse.Namespace(target="mx1", identity=None, known_hosts=None, local=False,
                              outbound_targets=None, step=None, json=False)
    await cmd_check(args, Console(wiring, out=out))
    assert not ANSI.search(out.getvalue())


async def test_a_hosts_escape_sequences_are_shown_not_obeyed():
    saved = guide_case.load_captured(guide_case.CASE / "captured")[("iptables-save", "-c")].stdout
    rule = "-A INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP"
    hostile = rule.replace(" -j DROP", ' -m comment --comment "\x1b[2J\x1b]0;pwned\x07" -j DROP')
    report = await guide_case.report(extra={("iptables-save", "-c"): saved.replace(rule, hostile)})
    text = terminal.render(report, color=True)
    assert "\\x1b[2J" in text and "\\x07" in text
    assert not re.search(r"\x1b(?!\[[0-9;]*m)", text)  # only our own colour codes
    assert "\x07" not in text
