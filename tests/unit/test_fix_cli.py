"""`mailcheck fix / rollback / audit` on a fake host and a fake engine (same FixService path)."""

from __future__ import annotations

import argparse
import io
import json

from bot.cli import build_parser, run
from bot.console import Console
from bot.models import Actor, PortStatus, Report
from bot.wiring import Wiring
from tests.unit.fakehost import FakeHost
from tests.unit.fixtures_fixes import RULES, fix, inventory, report, settings


class FakeEngine:
    """Reports a broken host until the fix's command has run on the fake host."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.checks = 0

    async def check(self, host, *, steps=None, progress=None) -> Report:
        self.checks += 1
        fixed = bool(self.host.ran("--comment"))
        r = report(host.name, fix("a"), fix("b"))
        r.ports = [PortStatus(port=25, direction="inbound", outside="open" if fixed else "filtered")]
        return r


def cli(tmp_path, answers=("y",), **kw):
    host = FakeHost(answers={("iptables-save",): (0, RULES)})
    replies = iter(answers)

    def ask(prompt: str) -> str:
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    c = Console(Wiring(settings(tmp_path, **kw), inventory(), engine=FakeEngine(host),
                       connect=host.connect), ask=ask, out=out, actor=Actor("cli", "alice"))
    return c, host, out


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


async def test_fix_without_ids_lists_the_plans_and_changes_nothing(tmp_path):
    c, host, out = cli(tmp_path)
    assert await run(parse("fix", "mx1"), c) == 1
    text = out.getvalue()
    assert "[fw-a]" in text and "[fw-b]" in text and "$ iptables -D INPUT" in text
    assert not host.journal


async def test_fix_asks_and_no_means_nothing(tmp_path):
    for answers in (("n",), ()):  # "n", and no terminal at all (EOF)
        c, host, out = cli(tmp_path, answers=answers)
        assert await run(parse("fix", "mx1", "fw-a"), c) == 1
        assert "nothing applied" in out.getvalue() and not host.journal


async def test_fix_yes_applies_through_fixservice_and_prints_before_after(tmp_path):
    c, host, out = cli(tmp_path, answers=())
    assert await run(parse("fix", "mx1", "fw-a", "--yes"), c) == 0
    text = out.getvalue()
    assert "fw-a: applied" in text and "inbound ipv4 25: filtered -> open" in text
    change_id = text.split("mailcheck rollback ")[1].split()[0]
    assert await run(parse("rollback", change_id), c) == 0
    assert "rolled_back" in out.getvalue()
    out.truncate(0)
    assert await run(parse("audit", "--host", "mx1", "--json"), c) == 0
    events = [e["event"] for e in json.loads(out.getvalue().strip("\x00"))]
    assert events[:5] == ["rollback", "verify", "apply", "started", "approval"] and "check" in events
    assert {e for e in events} >= {"plan", "check"}


async def test_unknown_fix_id_and_read_only(tmp_path):
    c, host, out = cli(tmp_path)
    assert await run(parse("fix", "mx1", "fw-zzz"), c) == 2 and "no such fix" in out.getvalue()
    c, host, out = cli(tmp_path, read_only=True)
    assert await run(parse("fix", "mx1", "--all", "--yes"), c) == 1
    assert "read-only" in out.getvalue() and not host.journal


async def test_ad_hoc_target_error_is_reported(tmp_path):
    c, host, out = cli(tmp_path)
    assert await run(parse("fix", "bad target;rm", "--all"), c) == 2
    assert "error:" in out.getvalue()
