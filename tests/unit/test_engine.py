"""The engine's orchestration and error handling, with a fake transport and prober.

(The real SSH path and real probes are proven by tests/lab/test_check_guide.py.)
"""

from __future__ import annotations

from bot.checks import StepOutcome, all_checks, facts
from bot.checks.services import Services
from bot.engine import Engine
from bot.errors import AuthError, CommandTimeout
from bot.firewall.parse.fail2ban import F2B_STATUS
from bot.models import CommandResult
from bot.probes import PortProbe, ProbeReport
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.unit.checkdata import LAB_IP_ADDR

HOST = Host(name="mx1", address="198.18.2.2")


class FakeTransport:
    def __init__(self, fail_on: int | None = None, error=None) -> None:
        self.name = "mx1"
        self.batches: list[list[tuple[str, ...]]] = []
        self.fail_on, self.error, self.closed = fail_on, error, False

    async def run(self, commands, *, step=""):
        self.batches.append([c.argv for c in commands])
        if self.fail_on == len(self.batches):
            raise self.error
        out = {facts.IP_ADDR: LAB_IP_ADDR, facts.PID1: "init\n"}
        status = {F2B_STATUS: 255}  # installed, no server: as on most hosts (no follow-up round)
        return [CommandResult(c, status.get(c.argv, 0), out.get(c.argv, ""), "") for c in commands]

    async def close(self):
        self.closed = True


class FakeProber:
    def __init__(self, state="open") -> None:
        self.state, self.calls = state, []

    async def probe(self, family, address, ports):
        self.calls.append((family, address))
        return ProbeReport([PortProbe(family, address, p, self.state, "198.18.2.1") for p in ports],
                           {family: "198.18.2.1"})


def engine(transport, prober=None, checks=None) -> Engine:
    return Engine(Settings(), Inventory(), transport_factory=lambda h: transport,
                  prober=prober or FakeProber(), checks=checks)


async def test_facts_first_then_the_batches_deduplicated_and_probes_for_both_families():
    """The facts round trip (with the resolver's configuration), then one batch of the steps
    that read local state and, beside it, one of each step that waits on the network: here
    the resolver's digs at the nameserver the facts' resolv.conf named (none: glibc's implicit
    127.0.0.1) and provider's curls; outbound is off. No command twice."""
    t, prober = FakeTransport(), FakeProber()
    seen = []

    async def progress(step, report):
        seen.append(step.name)

    report = await engine(t, prober).check(HOST, progress=progress)
    assert t.closed and t.batches[0] == [facts.OS_RELEASE, facts.IP_ADDR, facts.PID1, facts.RESOLV,
                                         facts.RESOLVED, facts.UNAME]
    ran = [argv for batch in t.batches for argv in batch]
    assert len(ran) == len(set(ran))
    assert len(t.batches) == 1 + 3
    kinds = sorted(sorted({argv[0] for argv in batch}) for batch in t.batches[1:])
    assert ["dig"] in kinds and ["curl", "sh"] in kinds  # the resolver's; provider's (AWS: sh)
    digs = next(b for b in t.batches if b[0][0] == "dig" and b[0][1].startswith("+time"))
    assert all("@127.0.0.1" in a for a in digs)
    assert sorted(seen) == sorted(["tools", "services", "ports", "vantage", "outbound", "resolver", "firewall",
                                   "provider", "conclusion", "dns", "reputation"])
    assert seen.index("resolver") > seen.index("ports") and seen.index("conclusion") > seen.index("provider")
    assert seen.index("dns") > seen.index("ports")  # after the probes: its lookups wait on them
    assert sorted(prober.calls) == [("ipv4", "198.18.2.2"), ("ipv6", "2001:2:0:2::2")]
    keys = {(p.direction, p.family, p.port) for p in report.ports}
    assert len(keys) == len(report.ports) == 16
    assert ("outbound", "ipv6", 587) in keys
    assert all(p.outside is None for p in report.ports if p.direction == "outbound")


async def test_ssh_failure_is_each_ssh_steps_error_and_probes_still_report():
    t = FakeTransport(fail_on=1, error=AuthError("root@198.18.2.2 refused our key", host="mx1"))
    report = await engine(t, FakeProber("filtered")).check(HOST)
    by = {s.name: s for s in report.steps}
    for name in ("tools", "services", "firewall"):
        assert by[name].status == "error"
        assert by[name].error.startswith(f"host mx1 step {name}: AuthError: root@198.18.2.2 refused")
    assert by["ports"].status == "warn"  # filtered, but the cause is unknown without SSH
    assert by["conclusion"].status == "skipped"
    assert {p.outside for p in report.ports if p.direction == "inbound"} == {"filtered"}
    assert report.exit_code == 2 and t.closed


async def test_timeout_of_the_main_batch_keeps_the_facts():
    t = FakeTransport(fail_on=2, error=CommandTimeout("commands did not finish within 30s", host="mx1"))
    report = await engine(t).check(HOST)
    assert {s.name for s in report.steps if s.status == "error"} == {
        "tools", "services", "resolver", "firewall", "provider"}
    assert {s.name: s.status for s in report.steps}["outbound"] == "skipped"  # off: nothing to run
    assert "CommandTimeout" in report.steps[0].error
    assert any(p.family == "ipv6" for p in report.ports)  # the facts batch had run
    assert report.exit_code == 2


async def test_a_crashing_check_is_its_own_steps_error():
    class Broken(Services):
        def evaluate(self, inp):
            raise ValueError("unparseable")

    checks = [Broken() if c.name == "services" else c for c in all_checks()]
    report = await engine(FakeTransport(), checks=checks).check(HOST)
    by = {s.name: s for s in report.steps}
    assert by["services"].status == "error"
    assert by["services"].error == "host mx1 step services: the check crashed (ValueError: unparseable)"
    assert by["tools"].status == "ok" and by["ports"].status == "ok"
    assert by["conclusion"].status == "skipped"


async def test_only_the_chosen_step_reports_and_no_probe_without_need():
    t, prober = FakeTransport(), FakeProber()
    report = await engine(t, prober).check(HOST, steps=["tools"])
    assert [s.name for s in report.steps] == ["tools"]
    assert prober.calls == []


async def test_conclusion_pulls_in_its_inputs_but_reports_alone():
    report = await engine(FakeTransport()).check(HOST, steps=["conclusion"])
    assert [s.name for s in report.steps] == ["conclusion"]


async def test_unknown_step_is_a_clear_error():
    import pytest

    from bot.errors import TargetError

    with pytest.raises(TargetError, match="unknown step"):
        await engine(FakeTransport()).check(HOST, steps=["nosuch"])


def test_step_outcome_default_is_not_shared():
    a, b = StepOutcome("ok", ""), StepOutcome("ok", "")
    a.findings.append(1)
    assert b.findings == []


async def test_cancelled_check_leaves_no_probe_running():
    import asyncio

    import pytest

    class SlowProber(FakeProber):
        async def probe(self, family, address, ports):
            await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine(FakeTransport(), SlowProber()).check(HOST), 0.2)
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_probe_that_raises_is_that_ports_error():
    from bot.probes import Prober

    class Broken(Prober):
        async def probe_port(self, family, address, port):
            if port == 993:
                raise ValueError("boom")
            return PortProbe(family, address, port, "open", "198.18.2.1")

    report = await Broken(1.0).probe("ipv4", "198.18.2.2", (25, 993))
    assert [(p.port, p.state) for p in report.probes] == [(25, "open"), (993, "error")]
    assert "boom" in report.probes[1].error


# --- each step as soon as its inputs are in; a new step is a class and a registry line ----

async def test_ssh_steps_are_reported_before_a_slow_prober_finishes():
    """Real timing: the probes take 1 s (as a filtered port waits for its timeout); the
    steps that read only SSH are reported when the batch is back, not after the probes."""
    import asyncio
    import time

    class SlowProber(FakeProber):
        async def probe(self, family, address, ports):
            await asyncio.sleep(1.0)
            return await super().probe(family, address, ports)

    t0 = time.monotonic()
    seen: list[tuple[str, float, list[str]]] = []

    async def progress(step, report):
        seen.append((step.name, time.monotonic() - t0, [s.name for s in report.steps]))

    report = await engine(FakeTransport(), SlowProber("filtered")).check(HOST, progress=progress)
    at = {name: t for name, t, _ in seen}
    order = [name for name, _, _ in seen if name != "reputation"]
    assert sorted(order[:5]) == ["firewall", "outbound", "provider", "services", "tools"], order
    assert order[5:] == ["ports", "vantage", "resolver", "conclusion", "dns"], order
    assert max(at["tools"], at["services"], at["firewall"], at["provider"]) < 0.5
    # reputation reads neither SSH nor the probes, only mailcheck's resolvers (the session's
    # refusing responder): its time is the machine's load, not the order this test is about.
    assert min(at["ports"], at["resolver"], at["conclusion"], at["dns"]) >= 1.0  # they read the probes
    so_far = [n for n in next(r for name, _, r in seen if name == order[4]) if n != "reputation"]
    assert so_far == ["tools", "services", "outbound", "firewall", "provider"]  # so far, in guide order
    assert [s.name for s in report.steps] == ["tools", "services", "ports", "vantage", "outbound", "resolver",
                                              "firewall", "provider", "conclusion", "dns", "reputation"]
    by = {s.name: s for s in report.steps}
    assert by["firewall"].duration < 0.5 <= 1.0 <= by["ports"].duration


async def test_a_new_step_is_one_class_and_a_registry_line(monkeypatch):
    """A DNS-like step, registered: its command joins the one batch, its outcome, findings
    and port updates reach the report, a step that needs it runs after it and reads them,
    and it fails like any SSH step. No engine edit."""
    from bot.checks import registry
    from bot.checks.base import Check
    from bot.models import Command, Finding, PortKey, PortUpdate

    dig = ("dig", "+short", "MX", "example.org")

    class Dns(Check):
        name = "mxcheck"
        ssh = "required"

        def commands(self, ctx):
            return [Command(dig)]

        def evaluate(self, inp):
            assert inp.results[dig].ok and inp.probes is None  # it did not ask for the probes
            return StepOutcome("warn", "no MX record", findings=[
                Finding(code="mxcheck.no_mx", severity="warning", summary="no MX", step="mxcheck")],
                ports={PortKey("inbound", "ipv4", 25): PortUpdate(detail="no MX record")})

    class MxReader(Check):
        name = "mx_reader"
        needs = ("mxcheck",)

        def evaluate(self, inp):
            return StepOutcome("ok", f"{inp.prior['mxcheck'].summary}; "
                               f"{inp.ports[('inbound', 'ipv4', 25)].detail}")

    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, MxReader, Dns))
    t = FakeTransport()
    report = await engine(t).check(HOST)
    assert any(dig in batch and ("ss", "-Hltnp") in batch for batch in t.batches)  # with the others
    names = [s.name for s in report.steps]
    assert names[:11] == ["tools", "services", "ports", "vantage", "outbound", "resolver", "firewall",
                          "provider", "conclusion", "dns", "reputation"]
    assert names[11:] == ["mxcheck", "mx_reader"]  # what a step needs runs first
    by = {s.name: s for s in report.steps}
    assert by["mx_reader"].summary == "no MX record; no MX record"
    assert "mxcheck.no_mx" in {f.code for f in report.findings}
    assert next(p for p in report.ports if p.key == ("inbound", "ipv4", 25)).detail == "no MX record"

    t = FakeTransport()
    report = await engine(t).check(HOST, steps=["mx_reader"])
    assert [s.name for s in report.steps] == ["mx_reader"] and [dig] in t.batches  # alone needed

    t = FakeTransport(fail_on=1, error=AuthError("root@198.18.2.2 refused our key", host="mx1"))
    by = {s.name: s for s in (await engine(t).check(HOST)).steps}
    assert by["mxcheck"].error.startswith("host mx1 step mxcheck: AuthError")


def test_needs_are_ordered_and_checked():
    import pytest

    from bot.checks.base import Check, dependency_order

    def step(name, *needs):
        return type(name, (Check,), {"name": name, "needs": needs})()

    a, b, c = step("a", "c"), step("b"), step("c")
    assert [x.name for x in dependency_order([a, b, c])] == ["b", "c", "a"]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order([step("a", "b"), step("b", "a")])
    with pytest.raises(ValueError, match="needs x, which no check provides"):
        dependency_order([step("a", "x")])


def test_a_port_update_is_typed():
    import pytest
    from pydantic import ValidationError

    from bot.models import PortStatus, PortUpdate

    with pytest.raises(ValidationError):
        PortUpdate(listenning="public")  # misspelled
    with pytest.raises(ValidationError):
        PortUpdate(outside="maybe")
    port = PortStatus(port=25, direction="inbound", process="exim4", firewall="block")
    after = PortUpdate(listening="public", process=None).apply(port)
    assert (after.listening, after.process, after.firewall) == ("public", None, "block")


async def test_a_step_whose_commands_wait_on_the_network_holds_back_no_other_step():
    """Each step's commands are a batch of their own: the outbound step's nc to a filtered
    target takes 1 s (here), the other SSH steps report at once."""
    import asyncio
    import time

    class SlowNc(FakeTransport):
        async def run(self, commands, *, step=""):
            if any(c.argv[:2] == ("nc", "-vz") for c in commands):
                await asyncio.sleep(1.0)
            return await super().run(commands, step=step)

    t0 = time.monotonic()
    at: dict[str, float] = {}

    async def progress(step, report):
        at[step.name] = time.monotonic() - t0

    e = Engine(Settings(outbound_targets="198.18.0.1:25", _env_file=None), Inventory(),
               transport_factory=lambda h: SlowNc(), prober=FakeProber())
    report = await e.check(HOST, progress=progress)
    assert max(at["tools"], at["services"], at["firewall"], at["provider"]) < 0.5 <= 1.0 <= at["outbound"], at
    assert {s.name: s.status for s in report.steps}["outbound"] == "ok"


# --- a check's own lookups: started with the run, told of each input, awaited last ---------

class Recorder:
    """A Lookups that records what it was told and when (the run's clock)."""

    def __init__(self, t0: float, fail: bool = False) -> None:
        self.t0, self.fail, self.updates, self.closed = t0, fail, [], False

    def update(self, inp):
        import time

        self.updates.append((time.monotonic() - self.t0, dict(inp.addresses), len(inp.results)))

    async def result(self, inp):
        if self.fail:
            raise OSError("resolver exploded")
        return {"results": len(inp.results), "probes": inp.probes is not None}

    async def close(self):
        self.closed = True


def lookup_check(recorder, ssh="wanted", **attrs):
    from bot.checks.base import Check
    from bot.models import Command

    def commands(self, ctx):
        first = [Command(("cat", "/etc/signer.conf"))]
        if ("cat", "/etc/signer.conf") in ctx.results:  # a command it could not know before
            first.append(Command(("cat", "/etc/key.pub")))
        return first

    def evaluate(self, inp):
        return StepOutcome("ok", f"looked up: {inp.lookups}; ssh_error={inp.ssh_error}")

    return type("Looker", (Check,), {"name": "looker", "ssh": ssh, "uses_probes": True,
                                     "commands": commands, "evaluate": evaluate,
                                     "lookups": lambda self, ctx: recorder, **attrs})()


class GatedTransport(FakeTransport):
    """Its main batch waits 0.5 s: what starts before SSH returns can be seen."""

    async def run(self, commands, *, step=""):
        import asyncio

        if len(self.batches) == 1:
            await asyncio.sleep(0.5)
        return await super().run(commands, step=step)


async def test_lookups_start_before_ssh_returns_and_their_result_reaches_evaluate():
    import time

    rec = Recorder(time.monotonic())
    t = GatedTransport()
    report = await engine(t, checks=[lookup_check(rec), *all_checks()]).check(HOST)
    first_at, addresses, _ = rec.updates[0]
    assert first_at < 0.1 and addresses == {"ipv4": "198.18.2.2"}  # at once, the probed address
    assert any(a.get("ipv6") for at, a, _n in rec.updates if at < 0.5)  # the facts' IPv6, before the batch
    by = {s.name: s for s in report.steps}
    assert by["looker"].summary.startswith("looked up: {'results': ")
    assert "'probes': True" in by["looker"].summary and rec.closed
    # a follow-up round for the command it could only ask for once the first was back (the
    # batches: facts, the shared one, the resolver's and the provider's, the follow-up)
    assert len(t.batches) == 5 and t.batches[4] == [("cat", "/etc/key.pub")]


async def test_steps_whose_commands_are_in_do_not_wait_for_a_follow_up_round():
    import asyncio
    import time

    class SlowThird(FakeTransport):
        async def run(self, commands, *, step=""):
            if len(self.batches) == 2:
                await asyncio.sleep(0.5)
            return await super().run(commands, step=step)

    t0 = time.monotonic()
    at = {}

    async def progress(step, report):
        at[step.name] = time.monotonic() - t0

    await engine(SlowThird(), checks=[lookup_check(Recorder(t0)), *all_checks()]).check(HOST, progress=progress)
    assert at["services"] < 0.3 <= 0.5 <= at["looker"]


async def test_a_crashing_lookup_is_its_steps_error_and_a_wanted_step_runs_without_ssh():
    import time

    t = FakeTransport(fail_on=1, error=AuthError("root@198.18.2.2 refused our key", host="mx1"))
    ok = await engine(t, checks=[lookup_check(Recorder(time.monotonic()))]).check(HOST)
    (step,) = ok.steps
    assert step.status == "ok" and "ssh_error=AuthError: root@198.18.2.2 refused our key" in step.summary

    rec = Recorder(time.monotonic(), fail=True)
    report = await engine(FakeTransport(), checks=[lookup_check(rec), *all_checks()]).check(HOST)
    by = {s.name: s for s in report.steps}
    assert by["looker"].status == "error"
    assert by["looker"].error == "host mx1 step looker: the check crashed (OSError: resolver exploded)"
    assert by["services"].status != "error" and rec.closed


async def test_a_domain_alone_runs_only_domain_checks_with_no_ssh_and_no_probe():
    import time

    import pytest

    from bot.errors import TargetError

    t, prober = FakeTransport(), FakeProber()
    rec = Recorder(time.monotonic())
    report = await engine(t, prober, checks=[lookup_check(rec, domain_only=True), *all_checks()]
                          ).check_domain("Example.ORG.")
    assert [s.name for s in report.steps] == ["looker", "dns"] and report.host == "example.org"
    assert t.batches == [] and prober.calls == [] and report.ports == []
    assert "'probes': False" in report.steps[0].summary
    assert report.steps[1].summary.startswith("example.org: ")  # the real dns step, as `mailcheck dns`
    with pytest.raises(TargetError, match="not a mail domain"):
        await engine(t, prober).check_domain("not a domain; rm -rf /")
