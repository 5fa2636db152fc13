"""`mailcheck fix`, `mailcheck rollback`, `mailcheck audit`: the terminal's way into FixService.

Same code path as the Slack button: the check's fixes are registered as
plans, then applied by plan id through FixService.apply (the actor is
Actor("cli", login): the person holding the SSH key; the read-only switch applies).

bot/cli.py's COMMANDS table holds (name, add_NAME, cmd_NAME_main) for each;
tests call `run(args, FixCli(...))` with fakes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bot.engine import Checker
from bot.errors import MailcheckError
from bot.fixes.apply import Connect
from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.fixes.service import FixService
from bot.fixes.verify import engine_verifier
from bot.models import Actor, Fix, Report
from bot.store import AuditEntry, SQLiteStore
from config.inventory import Host, Inventory
from config.settings import Settings

COMMANDS = ("fix", "rollback", "audit")


def _ssh_connect(settings: Settings) -> Connect:
    from bot.transport import SSHTransport

    return lambda host: SSHTransport(host, settings)


@dataclass
class FixCli:
    settings: Settings
    inventory: Inventory
    engine: Checker | None = None
    connect: Connect | None = None
    ask: Callable[[str], str] = input
    out: TextIO = field(default_factory=lambda: sys.stdout)
    actor: Actor = field(default_factory=lambda: Actor("cli", getpass.getuser()))

    def service(self) -> FixService:
        return FixService(
            settings=self.settings, inventory=self.inventory,
            store=SQLiteStore(self.settings.db_path),
            connect=self.connect or _ssh_connect(self.settings),
            verifier=engine_verifier(self.engine) if self.engine else None,
        )

    def say(self, text: str = "") -> None:
        print(text, file=self.out)


def add_fix(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("fix", help="apply the fixes a check proposes (shows them, asks first)")
    p.add_argument("target", help="inventory name or [user@]host[:port]")
    p.add_argument("fix_ids", nargs="*", metavar="FIX_ID", help="fixes to apply (see the check)")
    p.add_argument("--all", action="store_true", help="apply every proposed fix")
    p.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    p.add_argument("-i", dest="identity", type=Path, help="SSH identity (private key) file")
    p.add_argument("--known-hosts", type=Path, help="known_hosts file holding the host's key")
    return p


def add_rollback(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("rollback", help="restore the backup taken before a change")
    p.add_argument("change_id")
    p.add_argument("--force", action="store_true",
                   help="restore even if the rules changed since the fix (undoes those changes)")
    return p


def add_audit(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("audit", help="show the audit log (checks, approvals, refusals, changes)")
    p.add_argument("--host")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    return p


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    for add in (add_fix, add_rollback, add_audit):
        add(subparsers)


def from_settings(settings: Settings) -> FixCli:
    """The production wiring: inventory from settings, the real engine, SSH."""
    from bot.engine import Engine
    from config.inventory import load_inventory

    inventory = load_inventory(settings.inventory)
    return FixCli(settings, inventory, Engine(settings, inventory))


async def cmd_fix_main(args: argparse.Namespace, settings: Settings) -> int:
    return await run(args, from_settings(settings))


cmd_rollback_main = cmd_audit_main = cmd_fix_main  # `run` dispatches on args.command


async def run(args: argparse.Namespace, cli: FixCli) -> int:
    """Dispatch one of COMMANDS; returns the exit status."""
    try:
        if args.command == "fix":
            return await cmd_fix(cli, args.target, args.fix_ids, all_fixes=args.all, yes=args.yes,
                                 identity=args.identity, known_hosts=args.known_hosts)
        if args.command == "rollback":
            return await cmd_rollback(cli, args.change_id, force=args.force)
        return await cmd_audit(cli, host=args.host, limit=args.limit, as_json=args.json)
    except MailcheckError as e:
        cli.say(f"error: {e}")
        return 2


# --- fix ---------------------------------------------------------------------------------

def _choose(report: Report, ids: list[str], all_fixes: bool) -> list[Fix] | str:
    by_id = {f.id: f for f in report.fixes}
    if all_fixes:
        return list(report.fixes)
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        return f"no such fix: {', '.join(unknown)} (proposed: {', '.join(by_id) or 'none'})"
    return [by_id[i] for i in ids]


def show_fix(cli: FixCli, fix: Fix) -> None:
    cli.say(f"[{fix.id}] {fix.summary}")
    for c in fix.shell_commands:
        cli.say(f"    $ {c}")
    for c in fix.persist:
        cli.say(f"    then persist: {' '.join(c)}")
    for p in fix.preconditions:
        cli.say(f"    only if: {p.description}")


def _confirm(cli: FixCli, host: Host, n: int) -> bool:
    try:
        answer = cli.ask(f"Apply {n} fix(es) to {host.name}? A backup is taken first. [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def cmd_fix(cli: FixCli, target: str, ids: list[str], *, all_fixes: bool = False,
                  yes: bool = False, identity: Path | None = None,
                  known_hosts: Path | None = None) -> int:
    if cli.engine is None:
        cli.say("error: no check engine available to find the fixes")
        return 2
    from bot.cli import resolve_target  # the same target rules as `mailcheck check`

    host = resolve_target(target, cli.inventory, identity, known_hosts)
    report = await cli.engine.check(host)
    svc = cli.service()
    await svc.record_check(report, cli.actor)
    if not report.fixes:
        cli.say(f"{host.name}: nothing to fix ({report.verdict})")
        return 0 if report.verdict == "ok" else 1
    if not ids and not all_fixes:
        cli.say(f"{host.name}: proposed fixes (give their ids, or --all):")
        for fix in report.fixes:
            show_fix(cli, fix)
        return 1
    chosen = _choose(report, ids, all_fixes)
    if isinstance(chosen, str):
        cli.say(f"error: {chosen}")
        return 2
    for fix in chosen:
        show_fix(cli, fix)
    if not yes and not _confirm(cli, host, len(chosen)):
        cli.say("nothing applied")
        return 1
    plans = await svc.register(report, cli.actor, channel="cli", host=host)
    outcomes = [await svc.apply(plans[f.id], cli.actor) for f in chosen]
    for out in outcomes:
        print_apply(cli, out)
    return 0 if all(o.ok for o in outcomes) else 1


def print_apply(cli: FixCli, out: ApplyOutcome) -> None:
    cli.say(f"{out.fix_id}: {out.status}: {out.message}")
    before = {p.key: p for p in out.before.ports}
    for p in out.after.ports:
        old = before.get(p.key)
        was = (old.outside or old.firewall) if old else "?"
        cli.say(f"    {p.direction} {p.family} {p.port}: {was} -> {p.outside or p.firewall}")
    if out.change_id:
        cli.say(f"    to undo: mailcheck rollback {out.change_id}")


# --- rollback and audit --------------------------------------------------------------------

async def cmd_rollback(cli: FixCli, change_id: str, force: bool = False) -> int:
    out: RollbackOutcome = await cli.service().rollback(change_id, cli.actor, force=force)
    exact = {True: " (exact: the ruleset equals the one before the fix)", False: "", None: ""}
    cli.say(f"{change_id}: {out.status}: {out.message}{exact[out.exact]}")
    return 0 if out.ok else 1


def format_entry(e: AuditEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts))
    ref = e.change_id or e.plan_id or ""
    return f"{when}Z  {e.event:<11} {e.actor:<14} {e.host:<16} {e.result:<22} {ref}"


async def cmd_audit(cli: FixCli, *, host: str | None = None, limit: int = 50,
                    as_json: bool = False) -> int:
    entries = await cli.service().audit(host, limit)
    if as_json:
        cli.say(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return 0
    for e in entries:
        cli.say(format_entry(e))
        for c in e.commands:
            cli.say(f"      $ {c.splitlines()[0] if c else c}")
    return 0
