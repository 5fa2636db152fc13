"""The vantage points' probes: their real output read, compared with mailcheck's own view.

The outputs in data/vantage/ were captured from the real probes against a lab host (see
data/vantage/README); the lab test (tests/lab/test_vantage.py) runs them over SSH.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.checks.base import CheckContext
from bot.checks.vantage import (
    BASH_PROBE,
    PYTHON_PROBE,
    Vantage,
    VantageRun,
    bash_command,
    python_command,
    read_bash,
    read_python,
)
from bot.errors import ConfigError
from bot.models import PortKey
from bot.transport import command_line
from config.inventory import Host, Inventory, load_inventory
from config.settings import Settings
from tests.unit.checkdata import base_ports, make_input

DATA = Path(__file__).parent / "data" / "vantage"
STATES = {25: "open", 465: "rejected", 587: "filtered", 143: "refused", 993: "rejected"}


def states(probes) -> dict[int, str]:
    return {p.port: p.state for p in probes}


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_python_probe_output_is_classified_as_the_outside_probe(family):
    probes = read_python((DATA / f"python-{family}.out").read_text(), 2)
    assert states(probes) == STATES
    by_port = {p.port: p for p in probes}
    host = "198.18.56.2" if family == "v4" else "2001:2:0:38::2"
    assert by_port[465].icmp.sender == host and by_port[993].icmp.sender == host
    assert by_port[465].icmp.name == ("host-prohibited" if family == "v4" else "admin-prohibited")
    assert by_port[993].icmp.name == "port-unreachable"  # iptables' default REJECT: not "refused"
    assert by_port[587].error == "no answer within 2s"
    assert {p.source for p in probes} == {"198.18.56.1" if family == "v4" else "2001:2:0:38::1"}


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_bash_probe_tells_only_open_and_filtered(family):
    address = "198.18.56.2" if family == "v4" else "2001:2:0:38::2"
    probes = read_bash((DATA / f"bash-{family}.out").read_text(), address, 2)
    # a TCP RST (143), a port-unreachable (993) and a prohibited (465) all fail the same way in bash
    assert states(probes) == {25: "open", 587: "filtered", 143: "unknown", 465: "unknown", 993: "unknown"}
    assert "cannot tell" in next(p for p in probes if p.port == 143).error


def test_unreadable_output_is_an_error_not_a_verdict():
    with pytest.raises(ValueError):
        read_python("Traceback (most recent call last):", 2)


def test_the_probe_is_one_fixed_argv_quoted_by_the_transport():
    cmd = python_command("2001:2:0:38::2", 4)
    assert cmd.argv[:3] == ("python3", "-c", PYTHON_PROBE) and cmd.argv[3:5] == ("4", "2001:2:0:38::2")
    assert bash_command("198.18.1.2", 4).argv[:4] == ("bash", "-c", BASH_PROBE, "bash")
    assert PYTHON_PROBE in __import__("shlex").split(command_line(cmd))  # quoted in one place


def test_inventory_vantage_is_validated_and_listed(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text("hosts:\n  mx1: {address: 198.18.0.2}\n  v1: {address: 198.18.0.6, vantage: true}\n")
    inv = load_inventory(f)
    assert [h.name for h in inv.vantages(inv.get("mx1"))] == ["v1"] and inv.vantages(inv.get("v1")) == ()
    assert inv.vantages(Host(name="198.18.0.6", address="198.18.0.6")) == ()  # v1 itself, ad hoc
    f.write_text("hosts:\n  v1: {address: 198.18.0.6, vantage: sometimes}\n")
    with pytest.raises(ConfigError, match="vantage"):
        load_inventory(f)


V1 = Host(name="v1", address="198.18.9.2", vantage=True)


def outcome(view_states: dict[int, str], mine: dict[int, str]):
    ports = base_ports()
    for port, state in mine.items():
        key = PortKey("inbound", "ipv4", port)
        ports[key] = ports[key].model_copy(update={"outside": state})
    text = (DATA / "python-v4.out").read_text()
    probes = [p for p in read_python(text, 2) if p.port in view_states]
    probes = [p.__class__(**{**p.__dict__, "state": view_states[p.port]}) for p in probes]
    inp = make_input(ports=ports)
    inp = inp.__class__(**{**inp.__dict__, "lookups": [VantageRun(V1, probes)],
                           "sources": {"ipv4": "198.18.2.1"}})
    return Vantage().evaluate(inp)


def test_disagreement_names_both_views():
    out = outcome({25: "open", 587: "filtered"}, {25: "filtered", 587: "filtered"})
    found = [f for f in out.findings if f.code == "vantage.disagrees"]
    assert len(found) == 1 and found[0].ports == [PortKey("inbound", "ipv4", 25)]
    s = found[0].summary
    assert "filtered from mailcheck (198.18.2.1)" in s and "open from vantage point v1 (198.18.56.1)" in s
    assert "one path" in s and out.status == "warn"
    view = out.ports[PortKey("inbound", "ipv4", 25)].vantage[0]
    assert (view.vantage, view.outside, view.source) == ("v1", "open", "198.18.56.1")


def test_agreement_and_unknowns_raise_no_finding():
    out = outcome({25: "open", 587: "filtered", 143: "unknown"}, {25: "open", 587: "filtered", 143: "refused"})
    assert out.findings == [] and out.status == "ok" and "agree" in out.summary


def test_a_failed_vantage_point_says_so():
    inp = make_input()
    inp = inp.__class__(**{**inp.__dict__, "lookups": [VantageRun(V1, error="AuthError: refused our key")]})
    out = Vantage().evaluate(inp)
    assert [f.code for f in out.findings] == ["vantage.failed"] and "refused our key" in out.findings[0].summary


def test_no_vantage_point_no_lookups():
    settings = Settings(_env_file=None)
    assert Vantage().lookups(CheckContext(settings=settings)) is None
    assert Vantage().evaluate(make_input()).status == "skipped"
    assert Inventory().vantages(V1) == ()


async def test_the_vantage_probes_hold_back_no_other_step():
    """The vantage point's probe takes 1 s (here): every other step reports at once, and the
    vantage step's views reach the report's ports."""
    import asyncio
    import time

    from bot.engine import Engine
    from bot.models import CommandResult
    from tests.unit.test_engine import HOST, FakeProber, FakeTransport

    class SlowVantage:
        name = "v1"

        async def run(self, commands, *, step=""):
            await asyncio.sleep(1.0)
            out = {"198.18.2.2": (DATA / "python-v4.out").read_text().replace("198.18.56.2", "198.18.2.2"),
                   "2001:2:0:2::2": (DATA / "python-v6.out").read_text().replace("2001:2:0:38::2", "2001:2:0:2::2")}
            return [CommandResult(c, 0, out[c.argv[4]], "") for c in commands]

        async def close(self):
            pass

    t0, at = time.monotonic(), {}

    async def progress(step, report):
        at[step.name] = time.monotonic() - t0

    inv = Inventory.model_validate({"hosts": {"mx1": HOST.model_dump(), "v1": V1.model_dump()}})
    e = Engine(Settings(outbound_targets="off", _env_file=None), inv, prober=FakeProber(),
               transport_factory=lambda h: SlowVantage() if h.name == "v1" else FakeTransport())
    report = await e.check(HOST, progress=progress)
    others = [t for name, t in at.items() if name != "vantage"]
    assert max(others) < 0.5 <= 1.0 <= at["vantage"], at
    p25 = next(p for p in report.ports if p.key == ("inbound", "ipv4", 25))
    assert [(v.vantage, v.outside) for v in p25.vantage] == [("v1", "open")]
    # the fake prober says open everywhere; the vantage point saw 465 rejected, 587 filtered
    assert sorted(f.summary.split(":")[0] for f in report.findings if f.code == "vantage.disagrees") == [
        "Port 143/IPv4", "Port 143/IPv6", "Port 465/IPv4", "Port 465/IPv6", "Port 587/IPv4", "Port 587/IPv6",
        "Port 993/IPv4", "Port 993/IPv6"]


@pytest.mark.parametrize("change", [
    {"port": 1e400},  # JSON's 1e400 is a float infinity: int() of it overflowed
    {"errno": 10 ** 20},  # os.strerror overflowed
    {"source": {"a": 1}},  # accepted, then VantageView refused it: the step crashed
    {"port": 99999},  # a port mailcheck never asked about: was read as a probe of it
])
def test_a_vantage_hosts_malformed_output_is_unreadable_not_a_crash(change):
    """A vantage host is not trusted: its output, read from the real capture with one field
    changed, is a ValueError (each port then an `error` for that vantage point alone), never an
    OverflowError or RecursionError that took down the whole step, every vantage point's result with it."""
    import json
    data = json.loads((DATA / "python-v4.out").read_text())
    data["probes"][0] = {**data["probes"][0], **change}
    text = json.dumps(data)
    with pytest.raises(ValueError):
        read_python(text, 2)
    with pytest.raises(ValueError):
        read_python("[" * 60000, 2)
