"""The batch script: quoting in one place, framing that survives any output."""

from __future__ import annotations

import subprocess

import pytest

from bot.errors import HostKeyError, TransportError
from bot.models import Command
from bot.transport import (
    LocalTransport,
    SSHTransport,
    build_script,
    command_line,
    parse_script_output,
)
from config.inventory import Host
from config.settings import Settings


def test_command_line_quotes_every_word():
    cmd = Command(("echo", "a b", "$(id)", "`x`", "; rm -rf /", "'q'"))
    line = command_line(cmd)
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True).stdout
    assert out == "a b $(id) `x` ; rm -rf / 'q'\n"


def test_env_names_are_fixed_words_only():
    line = command_line(Command(("true",), env=(("LANG", "C"), ("X;id", "1"))))
    assert line.startswith("LANG=C timeout")
    assert "id" not in line.split("timeout")[0]


def _run_local(commands):
    import asyncio

    return asyncio.run(LocalTransport().run(commands))


def test_batch_keeps_stdout_stderr_and_status_apart():
    boundary_like = "0" * 32 + " 0 o"
    results = _run_local([
        Command(("printf", "%s\n%s", boundary_like, "no newline at end")),
        Command(("sh", "-c", "echo out; echo err >&2; exit 7")),
        Command(("printf", "")),
        Command(("definitely-not-installed-xyz",)),
    ])
    assert results[0].stdout == f"{boundary_like}\nno newline at end"
    assert (results[1].stdout, results[1].stderr, results[1].exit_status) == ("out\n", "err\n", 7)
    assert results[2].stdout == "" and results[2].ok
    assert results[3].missing and not results[3].ok


def test_batch_runs_commands_concurrently_and_times_out_each():
    import time

    t0 = time.monotonic()
    results = _run_local([Command(("sleep", "30"), timeout=1), Command(("sleep", "1"), timeout=5)])
    assert time.monotonic() - t0 < 5
    assert results[0].timed_out and results[1].ok


def test_script_that_never_started_is_reported():
    assert parse_script_output(b"sudo: a password is required\n", "a" * 32, [Command(("id",))]) is None


def test_build_script_has_no_unquoted_argv():
    script = build_script([Command(("echo", "$HOME"))], "b" * 32)
    assert "'$HOME'" in script


@pytest.mark.asyncio
async def test_missing_known_hosts_is_a_clear_host_key_error(tmp_path):
    host = Host(name="mx9", address="198.18.250.2", known_hosts=tmp_path / "nope")
    with pytest.raises(HostKeyError) as e:
        await SSHTransport(host, Settings(_env_file=None)).run([Command(("id",))], step="services")
    assert "mx9" in str(e.value) and "never accepts an unknown host key" in str(e.value)


@pytest.mark.asyncio
async def test_sudo_refusal_is_a_clear_transport_error():
    """What sudo -n prints when the user has no passwordless sudo (captured)."""
    from bot.transport import _run_batch

    class Refusing:
        name = "mx2"

        async def _exec(self, script):
            return b"", b"sudo: a password is required\n"

    with pytest.raises(TransportError) as e:
        await _run_batch(Refusing(), [Command(("id",))], "services")
    assert "passwordless sudo" in str(e.value) and "mx2" in str(e.value)


# --- what a host sends is bounded (a fleet's memory with it) --------------------------

def _fake_iptables_save(bin_dir, rules: int) -> None:
    """An `iptables-save -c` whose ruleset accepts `rules` other ports, then drops 25: cut
    anywhere before its end, it would read as 'allow 25'."""
    body = "".join(f"[0:0] -A INPUT -p tcp -m tcp --dport {10000 + i % 50000} -j ACCEPT\n"
                   for i in range(rules))
    (bin_dir / "rules").write_text(f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                                   f":OUTPUT ACCEPT [0:0]\n{body}"
                                   "[0:0] -A INPUT -p tcp -m tcp --dport 25 -j DROP\nCOMMIT\n")
    script = bin_dir / "iptables-save"
    script.write_text(f"#!/bin/sh\ncat {bin_dir / 'rules'}\n")
    script.chmod(0o755)


async def _firewall_on(bin_dir, monkeypatch, max_output: int):
    from bot.checks.firewall import Firewall
    from tests.unit.checkdata import make_input

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin")
    argv = ("iptables-save", "-c")
    t = LocalTransport(max_output=max_output)
    [r] = await t.run([Command(argv)])
    outcome = Firewall().evaluate(make_input({argv: r}))
    return r, outcome.ports[("inbound", "ipv4", 25)]


async def test_a_ruleset_longer_than_max_output_is_not_judged_from_its_start(tmp_path, monkeypatch):
    _fake_iptables_save(tmp_path, 400)  # ~25 kB
    size = (tmp_path / "rules").stat().st_size
    r, port25 = await _firewall_on(tmp_path, monkeypatch, max_output=size)  # exactly fits
    assert r.ok and len(r.stdout) == size
    assert port25.firewall == "block"
    r, port25 = await _firewall_on(tmp_path, monkeypatch, max_output=size - 1)
    assert r.exit_status is None and r.stdout == ""
    assert r.stderr == (f"mailcheck: stdout longer than {size - 1} bytes, not read "
                        "(MAILCHECK_MAX_OUTPUT)")
    assert port25.firewall == "unknown"  # never 'allow' from the first rules


async def test_max_output_holds_on_a_host_without_head(tmp_path, monkeypatch):
    """Without `head` the script sends all; mailcheck still refuses to judge the long one."""
    import shutil

    for prog in ("sh", "mktemp", "rm", "cat", "timeout", "printf"):
        if found := shutil.which(prog):
            (tmp_path / prog).symlink_to(found)
    _fake_iptables_save(tmp_path, 400)
    assert shutil.which("head", path=str(tmp_path)) is None
    monkeypatch.setenv("PATH", str(tmp_path))
    t = LocalTransport(max_output=5000)
    small, big = await t.run([Command(("cat", str(tmp_path / "iptables-save"))),
                              Command(("iptables-save", "-c"))])
    assert small.ok and small.stdout.startswith("#!/bin/sh")
    assert big.exit_status is None and "longer than 5000 bytes" in big.stderr


async def test_a_batch_beyond_max_host_output_is_an_error_not_a_partial_read():
    from bot.errors import OutputTooLarge

    t = LocalTransport(max_output=1 << 20, max_host_output=300_000)
    few = [Command(("head", "-c", "100000", "/dev/zero"))]
    assert len((await t.run(few))[0].stdout) == 100_000
    with pytest.raises(OutputTooLarge) as e:
        await t.run(few * 4)  # each one fits, the batch does not
    assert "more than 300000 bytes" in str(e.value) and "MAILCHECK_MAX_HOST_OUTPUT" in str(e.value)
