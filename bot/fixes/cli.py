"""`mailcheck fix`, `mailcheck rollback`, `mailcheck audit`: the terminal's way into FixService.

Same code path as the Slack button: the check's fixes are registered as
plans, then applied by plan id through FixService.apply (the actor is
Actor("cli", login): the person holding the SSH key; the read-only switch applies).

Each subcommand has its parser (add_NAME) and its handler (cmd_NAME(args, console));
bot/cli.py lists them. The handlers take everything from console.wiring.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.console import Console
from bot.errors import MailcheckError
from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.models import Fix, Report
from bot.store import AuditEntry
from config.inventory import Host, resolve_target

Handler = Callable[[argparse.Namespace, Console], Awaitable[int]]


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


def _errors_said(handler: Handler) -> Handler:
    """A MailcheckError (bad target, SSH failure, ...) is said on the console: exit 2."""

    @functools.wraps(handler)
    async def run(args: argparse.Namespace, console: Console) -> int:
        try:
            return await handler(args, console)
        except MailcheckError as e:
            console.say(f"error: {e}")
            return 2

    return run


# --- fix ---------------------------------------------------------------------------------

@_errors_said
async def cmd_fix(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck fix TARGET [FIX_ID ... | --all] [--yes]`: check, show, ask, apply."""
    wiring = console.wiring
    host = resolve_target(args.target, wiring.inventory, args.identity, args.known_hosts)
    report = await wiring.engine().check(host)
    svc = wiring.fix_service()
    await svc.record_check(report, console.actor)
    chosen = _chosen(console, host, report, args.fix_ids, args.all)
    if isinstance(chosen, int):
        return chosen
    for fix in chosen:
        show_fix(console, fix)
    if not args.yes and not _confirm(console, host, len(chosen)):
        console.say("nothing applied")
        return 1
    plans = await svc.register(report, console.actor, channel="cli", host=host)
    outcomes = [await svc.apply(plans[f.id], console.actor) for f in chosen]
    for out in outcomes:
        print_apply(console, out)
    return 0 if all(o.ok for o in outcomes) else 1


def _chosen(console: Console, host: Host, report: Report, ids: list[str],
            all_fixes: bool) -> list[Fix] | int:
    """The fixes to apply, or the exit status when there is nothing to apply."""
    if not report.fixes:
        console.say(f"{host.name}: nothing to fix ({report.verdict})")
        return 0 if report.verdict == "ok" else 1
    if not ids and not all_fixes:
        console.say(f"{host.name}: proposed fixes (give their ids, or --all):")
        for fix in report.fixes:
            show_fix(console, fix)
        return 1
    if all_fixes:
        return list(report.fixes)
    by_id = {f.id: f for f in report.fixes}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        console.say(f"error: no such fix: {', '.join(unknown)} (proposed: {', '.join(by_id)})")
        return 2
    return [by_id[i] for i in ids]


def show_fix(console: Console, fix: Fix) -> None:
    console.say(f"[{fix.id}] {fix.summary}")
    for c in fix.shell_commands:
        console.say(f"    $ {c}")
    for c in fix.persist:
        console.say(f"    then persist: {' '.join(c)}")
    for p in fix.preconditions:
        console.say(f"    only if: {p.description}")


def _confirm(console: Console, host: Host, n: int) -> bool:
    try:
        answer = console.ask(f"Apply {n} fix(es) to {host.name}? A backup is taken first. [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def print_apply(console: Console, out: ApplyOutcome) -> None:
    console.say(f"{out.fix_id}: {out.status}: {out.message}")
    before = {p.key: p for p in out.before.ports}
    for p in out.after.ports:
        old = before.get(p.key)
        was = (old.outside or old.firewall) if old else "?"
        console.say(f"    {p.direction} {p.family} {p.port}: {was} -> {p.outside or p.firewall}")
    if out.change_id:
        console.say(f"    to undo: mailcheck rollback {out.change_id}")


# --- rollback and audit --------------------------------------------------------------------

@_errors_said
async def cmd_rollback(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck rollback CHANGE_ID [--force]`."""
    svc = console.wiring.fix_service()
    out: RollbackOutcome = await svc.rollback(args.change_id, console.actor, force=args.force)
    exact = {True: " (exact: the ruleset equals the one before the fix)", False: "", None: ""}
    console.say(f"{args.change_id}: {out.status}: {out.message}{exact[out.exact]}")
    return 0 if out.ok else 1


def format_entry(e: AuditEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts))
    ref = e.change_id or e.plan_id or ""
    return f"{when}Z  {e.event:<11} {e.actor:<14} {e.host:<16} {e.result:<22} {ref}"


@_errors_said
async def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck audit [--host H] [--limit N] [--json]`."""
    entries = await console.wiring.store.audit(args.host, args.limit)
    if args.json:
        console.say(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return 0
    for e in entries:
        console.say(format_entry(e))
        for c in e.commands:
            console.say(f"      $ {c.splitlines()[0] if c else c}")
    return 0
