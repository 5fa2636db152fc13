"""Faults on real lab hosts: each gives a clear message naming host and step, exit 2,
the other steps still report, and nothing on the host changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.checks import StepOutcome, all_checks
from bot.checks.tools import Tools
from bot.engine import Engine
from bot.models import Command
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.labhost import _run

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]


def mailcheck(*args: str, prefix: tuple[str, ...] = (), path: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess:
    # no MAILCHECK_ setting of this machine, but the session's resolver (tests/conftest.py):
    # the DNS steps must not ask anything outside the lab
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCHECK_") or k == "MAILCHECK_RESOLVERS"}
    env.update(MAILCHECK_PROBE_TIMEOUT="1.5", MAILCHECK_CONNECT_TIMEOUT="3")
    if path is not None:
        env["PATH"] = path
    return subprocess.run([*prefix, sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def state(lab) -> tuple[str, str, str]:
    """What a check must never change: the rules, ufw, the listeners."""
    return (lab.iptables_save() + lab.iptables_save(six=True), lab.sh("ufw", "status").stdout,
            lab.sh("ss", "-Hltn").stdout)


def check_json(lab, *extra: str, target: str | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    r = mailcheck("check", target or f"root@{lab.ip}", "--json", *extra)
    return r, json.loads(r.stdout) if r.stdout.strip() else {}


def ssh_steps_failed(data: dict, host: str, kind: str) -> None:
    by = {s["name"]: s for s in data["steps"]}
    for name in ("tools", "services", "firewall"):
        assert by[name]["status"] == "error"
        assert by[name]["error"].startswith(f"host {host} step {name}: {kind}"), by[name]["error"]
    assert by["ports"]["status"] in ("ok", "warn")  # the outside probes still report
    assert by["conclusion"]["status"] == "skipped"
    assert data["exit_code"] == 2


def test_host_key_mismatch(labhost, tmp_path):
    labhost.start_exim("public")
    other = tmp_path / "otherkey"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{labhost.ip} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    before = state(labhost)
    r, data = check_json(labhost, "-i", str(labhost.client_key), "--known-hosts", str(wrong))
    assert r.returncode == 2
    ssh_steps_failed(data, labhost.ip, "HostKeyError")
    assert "refusing to connect" in data["steps"][0]["error"]
    assert "step tools: HostKeyError" in r.stderr  # progress shows it too
    assert {(p["port"], p["outside"]) for p in data["ports"]
            if p["direction"] == "inbound" and p["family"] == "ipv4" and p["port"] == 25} == {(25, "open")}
    assert state(labhost) == before


def test_auth_failure(labhost, tmp_path):
    wrong = tmp_path / "id_wrong"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong))
    before = state(labhost)
    r, data = check_json(labhost, "-i", str(wrong), "--known-hosts", str(labhost.known_hosts))
    assert r.returncode == 2
    ssh_steps_failed(data, labhost.ip, "AuthError")
    assert "refused our key" in data["steps"][1]["error"]
    assert state(labhost) == before


def test_unreachable_host(labhost):
    """An unused address routed into the lab host, which silently drops it (blackhole route)."""
    unused = f"198.18.{labhost.index}.130"
    _run("ip", "route", "add", f"198.18.{labhost.index}.128/25", "via", labhost.ip, "dev", labhost.veth)
    labhost.sh("ip", "route", "add", "blackhole", f"198.18.{labhost.index}.128/25")
    t0 = time.monotonic()
    r, data = check_json(labhost, "-i", str(labhost.client_key), "--known-hosts",
                         str(labhost.known_hosts), target=f"root@{unused}")
    assert time.monotonic() - t0 < 15
    assert r.returncode == 2
    ssh_steps_failed(data, unused, "UnreachableError")
    assert {p["outside"] for p in data["ports"] if p["direction"] == "inbound"} == {"filtered"}
    assert all(f["severity"] != "error" for f in data["findings"])  # cause unknown without SSH


async def test_command_timeout_is_that_steps_error(labhost):
    """A command that outlives its budget: the step says so, the others report."""

    class Slow(Tools):
        def commands(self, ctx):
            return [Command(("sleep", "30"), timeout=1)]

        def evaluate(self, inp):
            r = inp.results[("sleep", "30")]
            if r.timed_out:
                return StepOutcome("error", "timed out", error=f"`sleep 30` timed out after {r.command.timeout:g}s")
            return StepOutcome("ok", "finished")

    checks = [Slow() if c.name == "tools" else c for c in all_checks()]
    settings = Settings(probe_timeout=1.5, connect_timeout=3, _env_file=None)
    host = Host(name=f"mx{labhost.index}", address=labhost.ip, identity_file=labhost.client_key,
                known_hosts=labhost.known_hosts)
    t0 = time.monotonic()
    report = await Engine(settings, Inventory(), checks=checks).check(host)
    assert time.monotonic() - t0 < 10
    by = {s.name: s for s in report.steps}
    assert by["tools"].status == "error"
    assert by["tools"].error == f"host mx{labhost.index} step tools: `sleep 30` timed out after 1s"
    assert by["services"].status == "fail" and by["firewall"].status != "error"
    assert report.exit_code in (1, 2)


def test_missing_commands(labhost, tmp_path):
    """mailcheck --local on a host without ss, lsof, iptables, nft, ufw, dig, nc, whois."""
    labhost.start_exim("public")
    labhost.start_dovecot(tls=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("sh", "timeout", "mktemp", "rm", "cat", "ip", "ps", "ls", "tail"):
        (bin_dir / prog).symlink_to(shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin"))
    before = state(labhost)
    r = mailcheck("check", "--local", labhost.ip, "--json", path=str(bin_dir),
                  prefix=("ip", "netns", "exec", labhost.ns))
    data = json.loads(r.stdout)
    by = {s["name"]: s for s in data["steps"]}
    assert by["services"]["status"] == "error"
    assert by["services"]["error"] == (f"host {labhost.ip} step services: neither ss nor lsof could run: "
                                       "ss: not installed; lsof: not installed")
    tools = next(f for f in data["findings"] if f["code"] == "tools.missing")
    assert "dig, lsof, nc, whois" in tools["summary"] and "apt-get install -y" in tools["summary"]
    assert {p["outside"] for p in data["ports"] if p["direction"] == "inbound"} == {"open"}
    assert r.returncode == 2, r.stdout
    assert state(labhost) == before


async def test_connection_dropped_mid_check(labhost):
    """sshd dies while the batch runs: every step of that batch says so (the steps that read
    local state share it; the resolver's and provider's own batches were back), the probes
    still report."""
    import asyncio
    import os
    import signal

    class Slow(Tools):
        def commands(self, ctx):
            return [Command(("sleep", "5"), timeout=10)]

        def evaluate(self, inp):
            return StepOutcome("ok", "x")

    checks = [Slow() if c.name == "tools" else c for c in all_checks()]
    host = Host(name=f"mx{labhost.index}", address=labhost.ip, identity_file=labhost.client_key,
                known_hosts=labhost.known_hosts)
    settings = Settings(probe_timeout=1.5, connect_timeout=3, _env_file=None)
    task = asyncio.create_task(Engine(settings, Inventory(), checks=checks).check(host))
    await asyncio.sleep(2)
    for pid in labhost.pids():
        if labhost._comm(pid) == "sshd":
            os.kill(pid, signal.SIGKILL)
    report = await task
    by = {s.name: s for s in report.steps}
    for name in ("tools", "services", "firewall"):
        assert by[name].status == "error"
        # Read by the transport ("connection dropped: Connection lost") or, when the channel
        # closed before any exit status, by the batch ("the connection dropped while ...").
        assert by[name].error.startswith(f"host mx{labhost.index} step {name}: ConnectionLost: ")
        assert "connection dropped" in by[name].error, by[name].error
    assert {p.outside for p in report.ports if p.direction == "inbound"} == {"refused"}
    assert report.exit_code == 2

