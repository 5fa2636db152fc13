"""The CLI's handling of bad targets: a clear message, exit 2, no connection attempted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import COMMANDS, build_parser

ROOT = Path(__file__).parents[2]


def mailcheck(*args: str, inventory: Path | None = None) -> subprocess.CompletedProcess:
    # no MAILCHECK_ setting of this machine, but the session's resolver (tests/conftest.py):
    # the DNS steps must not ask anything outside the lab
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCHECK_") or k == "MAILCHECK_RESOLVERS"}
    if inventory is not None:
        env["MAILCHECK_INVENTORY"] = str(inventory)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          timeout=30, env=env, cwd=ROOT)


def test_unknown_inventory_name(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text("hosts:\n  mx1:\n    address: 198.18.200.2\n  mx2:\n    address: 198.18.201.2\n")
    r = mailcheck("check", "mx3", inventory=inv)
    assert r.returncode == 2
    assert "'mx3' is not in the inventory (known hosts: mx1, mx2)" in r.stderr
    assert "checking" not in r.stderr  # nothing was attempted


@pytest.mark.parametrize("target", ["root@bad host", "root@host;id", "a@b@c", "$(id).example",
                                    "host:99999", "-oProxyCommand=x", "root@"])
def test_malformed_target(target):
    r = mailcheck("check", "--", target)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "mailcheck:" in r.stderr and ("malformed target" in r.stderr or "not in the inventory" in r.stderr)
    assert "checking" not in r.stderr


def test_subcommands_come_from_one_table():
    assert [name for name, _, _ in COMMANDS][0] == "check"
    args = build_parser().parse_args(["check", "root@198.18.0.2:2222", "--json", "--step", "ports"])
    assert args.handler is COMMANDS[0][2] and args.step == ["ports"] and args.json


def test_help_is_written_for_the_user():
    r = mailcheck("--help")
    assert r.returncode == 0
    assert "Subcommands live" not in r.stdout and "COMMANDS" not in r.stdout
    assert "why a Linux mail server cannot send or receive mail" in r.stdout
    assert all(f"    {name} " in r.stdout for name in ("check", "dns", "fix", "rollback", "audit", "serve"))
    assert "exit status: 0 mail can flow" in r.stdout and "mailcheck check mx1" in r.stdout


def test_each_subcommand_has_its_own_handler():
    handlers = [handler for _, _, handler in COMMANDS]
    assert len(set(handlers)) == len(handlers) == 6


@pytest.mark.parametrize("args", [("dns", "example"), ("dns", "a b.example"), ("dns", "x;id.example"),
                                  ("dns", "198.18.0.2"), ("check", "mx1", "--domain", "$(id).example")])
def test_a_bad_domain_is_refused_before_anything_runs(tmp_path, args):
    inv = tmp_path / "inventory.yaml"
    inv.write_text("hosts:\n  mx1:\n    address: 198.18.200.2\n")
    r = mailcheck(*args, inventory=inv)
    assert r.returncode == 2 and "not a mail domain" in r.stderr
    assert "checking" not in r.stderr


def test_domain_options_parse():
    args = build_parser().parse_args(["check", "mx1", "--domain", "a.example", "--domain", "b.example"])
    assert args.domain == ["a.example", "b.example"]
    assert build_parser().parse_args(["dns", "example.com", "--json"]).json
