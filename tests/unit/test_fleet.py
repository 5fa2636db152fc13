"""Fleet checks (bot/fleet): concurrency, streaming, deadlines and the summary, with real
asyncio timing (time.monotonic, real sleeps) and a scripted engine: each host's check
takes the time the test gives it, reports its steps through `progress` as the real engine
does, and records when it ran. The engine's own checks are tested elsewhere; the lab
test (tests/lab/test_fleet_lab.py) runs this over real SSH."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from argparse import Namespace
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from bot.checks.registry import STEPS
from bot.console import Console
from bot.diagnosis import answer
from bot.errors import TargetError, UnreachableError
from bot.fleet import FleetSummary, HostResult, check_fleet, run_fleet, top_cause
from bot.fleet.cli import cmd_check_fleet
from bot.models import Finding, PortKey, Report, StepResult
from bot.wiring import Wiring
from config.inventory import Host, Inventory
from config.settings import Settings

# Timing claims are relative (this before that) or bounded far below the alternative they
# rule out (sequential, blocked by a slow host), so a loaded 2-core machine does not fail them.


def finding(code: str, severity: str, step: str, summary: str, ports=()) -> Finding:
    return Finding(code=code, severity=severity, step=step, summary=summary, ports=list(ports))


@dataclass
class Script:
    """What a host's check does: take `seconds` (the steps reported evenly within it) and
    end with these findings; or raise after `seconds`; or stall `stall` s after its first step."""

    seconds: float = 0.1
    findings: list[Finding] = field(default_factory=list)
    raises: Exception | None = None
    stall: float = 0.0


class ScriptedEngine:
    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.running = 0
        self.most = 0
        self.spans: dict[str, tuple[float, float]] = {}
        self.cancelled: list[str] = []

    async def check(self, host: Host, *, steps=None, progress=None) -> Report:
        script = self.scripts[host.name]
        start = time.monotonic()
        self.running += 1
        self.most = max(self.most, self.running)
        report = Report(host=host.name, address=host.address)
        try:
            if script.raises is not None:
                await asyncio.sleep(script.seconds)
                raise script.raises
            names = list(steps or STEPS)
            for n, name in enumerate(names):
                await asyncio.sleep(script.seconds / len(names) + (script.stall if n == 1 else 0))
                status = "fail" if any(f.step == name and f.severity == "error"
                                       for f in script.findings) else "ok"
                step = StepResult(name=name, status=status, summary=f"{name} done",
                                  duration=time.monotonic() - start)
                report.steps.append(step)
                report.findings += [f for f in script.findings if f.step == name]
                if progress is not None:
                    await progress(step, report)
            report.duration = time.monotonic() - start
            return report
        except asyncio.CancelledError:
            self.cancelled.append(host.name)
            raise
        finally:
            self.running -= 1
            self.spans[host.name] = (start, time.monotonic())


def hosts(*names: str) -> list[Host]:
    return [Host(name=n, address=f"198.18.{i + 1}.2") for i, n in enumerate(names)]


async def collect(engine, hs, **kw) -> list[tuple[float, HostResult]]:
    t0 = time.monotonic()
    out = []
    async with aclosing(check_fleet(engine, hs, **kw)) as results:
        async for r in results:
            out.append((time.monotonic() - t0, r))
    return out


async def test_at_most_concurrency_hosts_at_a_time_in_the_inventory_order():
    names = [f"mx{i}" for i in range(12)]
    engine = ScriptedEngine({n: Script(0.2) for n in names})
    t0 = time.monotonic()
    got = await collect(engine, hosts(*names), concurrency=4, deadline=5)
    elapsed = time.monotonic() - t0
    assert engine.most == 4
    assert 0.6 <= elapsed < 1.4  # three waves of four (one at a time: 2.4 s)
    starts = sorted(names, key=lambda n: engine.spans[n][0])
    assert starts[:4] == names[:4] and set(starts[4:8]) == set(names[4:8])
    assert sorted(r.host for _, r in got) == sorted(names)


async def test_results_arrive_as_each_host_finishes():
    engine = ScriptedEngine({"a": Script(0.6), "b": Script(0.1), "c": Script(0.3)})
    got = await collect(engine, hosts("a", "b", "c"), concurrency=50, deadline=5)
    assert [r.host for _, r in got] == ["b", "c", "a"]
    (tb, b), (tc, _), (ta, _) = got
    assert tb + 0.3 < ta and tc + 0.1 < ta  # handed over while "a" still ran
    assert ta >= 0.6 and b.verdict == "ok" and b.error is None and 0.1 <= b.duration < ta


async def test_a_host_past_its_deadline_is_reported_then_and_holds_back_no_one():
    broken = [finding("firewall.inbound_blocked", "error", "tools", "iptables drops 25")]
    engine = ScriptedEngine({"slow": Script(0.25, broken, stall=30), "fast1": Script(0.1),
                             "fast2": Script(0.2), "late": Script(0.3)})
    t0 = time.monotonic()
    got = await collect(engine, hosts("slow", "fast1", "fast2", "late"), concurrency=2, deadline=1.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.5  # the slow host's deadline, not its 30 s
    order = [r.host for _, r in got]
    assert order == ["fast1", "fast2", "late", "slow"]  # the slow host's slot never blocked them
    t_slow, slow = got[-1]
    assert 1.0 <= t_slow < 2.5 and engine.cancelled == ["slow"]
    # the step it finished in time is kept, with its finding; the others say why they are missing
    by = {s.name: s for s in slow.report.steps}
    assert [s.name for s in slow.report.steps] == list(STEPS)
    assert by["tools"].status == "fail" and slow.report.findings == broken
    assert by["services"].status == "error"
    assert by["services"].error == ("host slow step services: no result within 1 s "
                                    "(the host's deadline, MAILCHECK_HOST_DEADLINE)")
    assert slow.verdict == "broken"  # a finding it made says so, as for one host
    assert slow.cause == "iptables drops 25" and slow.error == by["services"].error
    assert slow.report.to_json_dict()["exit_code"] == 1


async def test_a_dead_host_and_a_crash_are_their_own_errors():
    engine = ScriptedEngine({
        "dead": Script(0.05, raises=UnreachableError("cannot reach 198.18.1.2:22: Connection refused",
                                                     host="dead", step="connect")),
        "bug": Script(0.05, raises=KeyError("x")), "ok": Script(0.1)})
    got = {r.host: r for _, r in await collect(engine, hosts("dead", "bug", "ok"),
                                               concurrency=3, deadline=5)}
    assert got["dead"].verdict == "error" and got["dead"].cause == (
        "host dead step connect: cannot reach 198.18.1.2:22: Connection refused")
    assert all(s.status == "error" for s in got["dead"].report.steps)
    assert got["bug"].error == "host bug: the check crashed (KeyError: 'x')"
    assert got["ok"].verdict == "ok" and got["ok"].cause == ""


async def test_stopping_early_cancels_the_checks_still_running():
    engine = ScriptedEngine({"a": Script(0.05), "b": Script(5), "c": Script(5)})
    t0 = time.monotonic()
    async with aclosing(check_fleet(engine, hosts("a", "b", "c"), concurrency=3, deadline=10)) as rs:
        first = await anext(rs)
    assert first.host == "a" and time.monotonic() - t0 < 2.5  # not the 5 s of b and c
    assert sorted(engine.cancelled) == ["b", "c"] and engine.running == 0


async def test_run_fleet_calls_back_per_result_and_summarises():
    bad = [finding("service.down", "error", "services", "exim4 is not running")]
    engine = ScriptedEngine({"ok": Script(0.05), "bad": Script(0.1, bad),
                             "dead": Script(0.15, raises=UnreachableError("refused", host="dead"))})
    seen = []

    async def on_result(r: HostResult) -> None:
        seen.append((r.host, r.verdict, r.cause))

    summary = await run_fleet(engine, hosts("ok", "bad", "dead"), concurrency=3, deadline=5,
                              on_result=on_result)
    assert seen == [("ok", "ok", ""), ("bad", "broken", "exim4 is not running"),
                    ("dead", "error", "host dead: refused")]
    assert summary.hosts == {"ok": ["ok"], "broken": ["bad"], "error": ["dead"]}
    assert summary.exit_code == 2 and summary.count == 3


def test_exit_status_summarises_the_fleet():
    def summary(*verdicts):
        s = FleetSummary()
        for i, v in enumerate(verdicts):
            s.hosts[v].append(f"h{i}")
        return s.exit_code

    assert summary("ok", "ok") == 0
    assert summary("ok", "broken") == 1
    assert summary("ok", "broken", "error") == summary("error") == 2
    assert summary() == 0


def test_top_cause_is_the_first_cause_of_the_hosts_own_report():
    """bot.diagnosis.answer's first cause: a symptom its cause explains (the same port) is
    not it; worst first; a warning on a host whose mail flows; a note never."""
    port25 = [PortKey("inbound", "ipv4", 25)]
    r = Report(host="h", address="a", steps=[StepResult(name="ports", status="fail", summary="")],
               findings=[finding("port.filtered", "error", "ports", "25/IPv4 filtered", port25),
                         finding("tools.missing", "info", "tools", "whois missing"),
                         finding("firewall.inbound_blocked", "error", "firewall", "INPUT rule 2 drops 25",
                                 port25),
                         finding("provider.port_blocked", "critical", "conclusion", "provider blocks 25")])
    assert top_cause(r) == "provider blocks 25" == answer(r).causes[0].summary
    r.findings.pop()
    assert top_cause(r) == "INPUT rule 2 drops 25"
    r.findings = [finding("smtp.no_starttls", "warning", "ports", "no STARTTLS on 587"),
                  finding("tools.missing", "info", "tools", "whois missing")]
    assert r.verdict == "ok" and top_cause(r) == "no STARTTLS on 587"
    r.findings = r.findings[1:]
    assert top_cause(r) == ""


# --- the CLI: streaming, the table, bad input --------------------------------------------

class Clock(io.StringIO):
    """stdout that notes when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.monotonic()
        self.times: list[float] = []

    def write(self, s: str) -> int:
        self.times += [time.monotonic() - self.t0] * s.count("\n")
        return super().write(s)


def console(scripts: dict[str, Script], inventory: dict, **settings) -> tuple[Console, Clock]:
    out = Clock()
    wiring = Wiring(Settings(_env_file=None, **settings), Inventory.model_validate(inventory),
                    engine=ScriptedEngine(scripts))
    return Console(wiring, out=out), out


def args(target: str, json_out: bool = False, **kw) -> Namespace:
    base = dict(target=target, json=json_out, identity=None, known_hosts=None, local=False,
                outbound_targets=None, step=None)
    return Namespace(**{**base, **kw})


INVENTORY = {"hosts": {"mx1": {"address": "198.18.1.2", "tags": ["eu"]},
                       "mx2": {"address": "198.18.2.2", "tags": ["eu"]},
                       "mx3": {"address": "198.18.3.2"}},
             "groups": {"mail": ["mx1", "mx2", "mx3"]}}


async def test_json_streams_one_report_per_line_as_hosts_finish(capsys):
    bad = [finding("firewall.inbound_blocked", "error", "firewall", "INPUT drops 25")]
    c, out = console({"mx1": Script(0.8), "mx2": Script(0.1, bad), "mx3": Script(0.3)}, INVENTORY)
    assert await cmd_check_fleet(args("group:mail", json_out=True), c) == 1
    lines = out.getvalue().splitlines()
    reports = [json.loads(line) for line in lines]
    assert [r["host"] for r in reports] == ["mx2", "mx3", "mx1"]
    assert reports[0]["verdict"] == "broken" and reports[0]["exit_code"] == 1
    assert reports[0]["findings"][0]["summary"] == "INPUT drops 25"
    assert out.times[0] + 0.4 < out.times[2] and out.times[2] >= 0.8  # written as each finished
    err = capsys.readouterr().err
    assert err.startswith("checking 3 hosts (group:mail), 3 at a time, each within ")
    assert re.search(r"^\[1/3\] mx2   BROKEN +\d+\.\ds  INPUT drops 25$", err, re.M)
    assert "3 hosts in " in err and "2 ok; 1 broken (mx2)" in err


async def test_the_table_prints_rows_as_hosts_finish_then_the_summary():
    c, out = console({"mx1": Script(0.6, raises=UnreachableError("refused", host="mx1")),
                      "mx2": Script(0.1)}, INVENTORY)
    assert await cmd_check_fleet(args("tag:eu"), c) == 2
    lines = [re.sub(r"\d+\.\ds", "T", line) for line in out.getvalue().splitlines()]
    assert lines[0] == "HOST  VERDICT    TIME  TOP CAUSE"
    assert lines[1] == "mx2   ok         T  mail can flow"
    assert lines[2] == "mx1   ERROR      T  host mx1: refused"
    assert lines[3].startswith("2 hosts in ") and lines[3].endswith(
        "1 ok; 1 could not be checked (mx1)")
    assert out.times[1] + 0.3 < out.times[2]


async def test_host_derived_text_cannot_drive_the_terminal():
    evil = [finding("service.down", "error", "services", "exim\x1b[2J\x1b]0;pwned\x07 down\nfake row")]
    c, out = console({"mx1": Script(0.05, evil), "mx2": Script(0.05), "mx3": Script(0.05)}, INVENTORY)
    await cmd_check_fleet(args("all"), c)
    row = next(line for line in out.getvalue().splitlines() if line.startswith("mx1"))
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert row.endswith("exim [2J ]0;pwned  down fake row")


@pytest.mark.parametrize("kw, message", [
    ({"local": True}, "-i, --known-hosts and --local are for one ad-hoc host"),
    ({"identity": "/tmp/k"}, "selects inventory hosts"),
])
async def test_ad_hoc_flags_with_a_selection_are_refused(kw, message):
    c, out = console({}, INVENTORY)
    with pytest.raises(TargetError, match=message):
        await cmd_check_fleet(args("all", **kw), c)
    assert out.getvalue() == ""


async def test_the_deadline_and_concurrency_come_from_the_settings(capsys):
    c, out = console({"mx1": Script(5), "mx2": Script(0.05), "mx3": Script(0.05)}, INVENTORY,
                     host_deadline=0.5, fleet_concurrency=2)
    t0 = time.monotonic()
    assert await cmd_check_fleet(args("all", json_out=True), c) == 2
    assert time.monotonic() - t0 < 2.5  # mx1's deadline, not its 5 s
    assert "3 hosts (all), 2 at a time, each within 0.5 s" in capsys.readouterr().err
    last = json.loads(out.getvalue().splitlines()[-1])
    assert last["host"] == "mx1" and last["verdict"] == "error"


def test_the_default_deadline_covers_a_hosts_own_timeouts():
    s = Settings(_env_file=None)
    assert s.host_deadline_or_default() == 2 * 10 + 2 * (20 + 10) + 4 + 2 * 30  # greeting_timeout 30
    assert Settings(_env_file=None, host_deadline=7).host_deadline_or_default() == 7
