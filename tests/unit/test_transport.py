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
