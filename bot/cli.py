"""The `mailcheck` command line: the parser, `main`, and the check handler.

Each subcommand is a parser builder `add_NAME(sub)` and a handler
`async cmd_NAME(args, console) -> int`, listed once in COMMANDS. main() builds the
settings and the wiring once (bot/wiring.py) and gives each handler a Console.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.checks.registry import STEPS
from bot.console import Console
from bot.engine import Progress
from bot.errors import MailcheckError
from bot.fixes.cli import (
    Handler,
    add_audit,
    add_fix,
    add_rollback,
    cmd_audit,
    cmd_fix,
    cmd_rollback,
)
from bot.fleet.cli import cmd_check_fleet
from bot.models import Report, StepResult
from bot.render import terminal
from bot.slack.cli import add_serve, cmd_serve
from bot.wiring import Wiring
from config.inventory import is_selector, resolve_target, valid_domain
from config.settings import load_settings

DESCRIPTION = """\
Find out why a Linux mail server cannot send or receive mail, and fix it with a
teammate's approval. `mailcheck check HOST` walks the mail-firewall guide's steps
on the host (over SSH) and from outside, and its mail domains and addresses in DNS;
`mailcheck dns DOMAIN` checks a domain in DNS alone; `mailcheck fix HOST` applies what
it proposes, with a backup, a lock-out guard and a check afterwards."""

EPILOG = """\
HOST is a name from the inventory (MAILCHECK_INVENTORY), or [user@]host[:port]
with -i IDENTITY and --known-hosts FILE. Host keys are always verified.
`check` also takes all, group:NAME or tag:NAME: those inventory hosts concurrently
(MAILCHECK_FLEET_CONCURRENCY at a time), a row per host as it finishes.

examples:
  mailcheck check mx1
  mailcheck check admin@203.0.113.10:2222 -i ~/.ssh/id_ed25519 --known-hosts ~/.ssh/known_hosts
  mailcheck check mx1 --json --step firewall
  mailcheck check mx1 --domain example.com --step dns
  mailcheck check group:mail
  mailcheck check all --json
  mailcheck dns example.com
  mailcheck fix mx1 --all
  mailcheck rollback CHANGE_ID
  mailcheck audit --host mx1

exit status: 0 mail can flow, 1 a finding says it cannot, 2 the check could not run
(many hosts: 2 if any host could not be checked, else 1 if any host cannot pass mail).
Run `mailcheck COMMAND --help` for a command's options."""


def add_check(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="walk the guide's steps on a host (or many) and report")
    p.add_argument("target", help="inventory name, or [user@]host[:port]; or all, group:NAME, "
                   "tag:NAME for those inventory hosts at once")
    p.add_argument("--json", action="store_true",
                   help="print the JSON report on stdout (many hosts: one report per line)")
    p.add_argument("-i", dest="identity", type=Path, help="SSH identity (private key) file")
    p.add_argument("--known-hosts", type=Path, help="known_hosts file holding the host's key")
    p.add_argument("--local", action="store_true", help="run the commands on this machine, no SSH")
    p.add_argument("--outbound-targets", metavar="TARGETS",
                   help="the servers the host connects to on 25/465/587 (nc -vz): host:port, ... "
                        "or `off` (default: MAILCHECK_OUTBOUND_TARGETS, a few large providers')")
    p.add_argument("--step", action="append", choices=STEPS,
                   help="only this step (and what it needs); repeatable")
    p.add_argument("--domain", action="append", metavar="DOMAIN",
                   help="a mail domain to check in DNS (instead of the inventory's domain: or the "
                        "MTA's); repeatable")
    return p


async def _report(args: argparse.Namespace, run: Callable[[Progress], Awaitable[Report]]) -> int:
    """Each step's line once, as it arrives, then the answer (the causes and their fixes
    first, as in Slack) on stdout; with --json, the JSON report on stdout and the step lines
    on stderr."""
    out = sys.stderr if args.json else sys.stdout
    color = out.isatty() and not os.environ.get("NO_COLOR")

    async def progress(step: StepResult, report: Report) -> None:
        print(terminal.progress_line(step, color), file=out, flush=True)

    report = await run(progress)
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        print("\n" + terminal.render(report, color))
    return report.exit_code


async def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck check TARGET`: the steps as they arrive, then the answer (_report); a
    selector (all, group:NAME, tag:NAME) checks those hosts at once (bot/fleet/cli.py)."""
    if is_selector(args.target):
        return await cmd_check_fleet(args, console)
    wiring = console.wiring
    host = resolve_target(args.target, wiring.inventory, args.identity, args.known_hosts)
    domains = [valid_domain(d) for d in getattr(args, "domain", None) or []]
    engine = wiring.engine(local=args.local, outbound_targets=args.outbound_targets)
    print(f"checking {host.name} ({host.user}@{host.address}:{host.port}) ...", file=sys.stderr)
    return await _report(args, lambda progress: engine.check(
        host, steps=args.step, progress=progress, domains=domains or None))


def add_dns(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("dns", help="check a mail domain in DNS alone (no host, no SSH)")
    p.add_argument("domain", help="the mail domain, e.g. example.com")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    return p


async def cmd_dns(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck dns DOMAIN`: MX, SPF, DMARC, MTA-STS, TLS-RPT, DANE records of the domain."""
    domain = valid_domain(args.domain)
    engine = console.wiring.engine()
    print(f"checking {domain} in DNS ...", file=sys.stderr)
    return await _report(args, lambda progress: engine.check_domain(domain, progress=progress))


COMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], argparse.ArgumentParser], Handler]] = [
    ("check", add_check, cmd_check),
    ("dns", add_dns, cmd_dns),
    ("fix", add_fix, cmd_fix),
    ("rollback", add_rollback, cmd_rollback),
    ("audit", add_audit, cmd_audit),
    ("serve", add_serve, cmd_serve),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailcheck", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _name, add, handler in COMMANDS:
        add(sub).set_defaults(handler=handler)
    return parser


async def run(args: argparse.Namespace, console: Console) -> int:
    """Run the handler the parser chose for `args`."""
    try:
        return await args.handler(args, console)
    finally:
        await console.wiring.aclose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        console = Console(Wiring(load_settings()))
        return asyncio.run(run(args, console))
    except MailcheckError as e:
        print(f"mailcheck: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
