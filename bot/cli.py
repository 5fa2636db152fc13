"""The `mailcheck` command line. Subcommands live in one table (COMMANDS).

To add one: write `def add_NAME(sub)` that builds its parser and
`async def cmd_NAME(args, settings) -> int`, and add ("NAME", add_NAME,
cmd_NAME) to COMMANDS. Settings are built once in main() and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.checks.registry import STEPS
from bot.errors import MailcheckError
from bot.fixes.cli import add_audit, add_fix, add_rollback, cmd_fix_main
from bot.models import Report, StepResult
from bot.slack.cli import add_serve, cmd_serve
from config.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def add_check(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="walk the guide's steps on one host and report")
    p.add_argument("target", help="inventory name, or [user@]host[:port]")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument("-i", dest="identity", type=Path, help="SSH identity (private key) file")
    p.add_argument("--known-hosts", type=Path, help="known_hosts file holding the host's key")
    p.add_argument("--local", action="store_true", help="run the commands on this machine, no SSH")
    p.add_argument("--outbound-test", metavar="IP",
                   help="also test outbound 25/465/587 from the host (nc -vz) to this outside IP")
    p.add_argument("--step", action="append", choices=STEPS,
                   help="only this step (and what it needs); repeatable")
    return p


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.engine import Engine
    from bot.render import terminal
    from bot.transport import LocalTransport
    from config.inventory import load_inventory

    inventory = load_inventory(settings.inventory)
    host = resolve_target(args.target, inventory, args.identity, args.known_hosts)
    factory = (lambda h: LocalTransport(h.name)) if args.local else None
    engine = Engine(settings, inventory, transport_factory=factory, outbound_target=args.outbound_test)

    async def progress(step: StepResult, report: Report) -> None:
        print(terminal.progress_line(step), file=sys.stderr, flush=True)

    print(f"checking {host.name} ({host.user}@{host.address}:{host.port}) ...", file=sys.stderr)
    report = await engine.check(host, steps=args.step, progress=progress)
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        print(terminal.render(report))
    return report.exit_code


def resolve_target(target: str, inventory, identity: Path | None, known_hosts: Path | None):
    """An inventory name, or `[user@]host[:port]`.

    A bare single word that is not in the inventory is taken for a mistyped
    inventory name (the error lists the known ones), not for a host name:
    ad-hoc hosts need a dotted name, an IP address or `user@`.
    """
    import ipaddress

    from config.inventory import parse_target

    bare = not any(c in target for c in "@:.[") and target != "localhost"
    if bare and target not in inventory.hosts:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            inventory.get(target)  # raises TargetError naming the known hosts
    return parse_target(target, inventory, identity, known_hosts)


COMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], argparse.ArgumentParser], Handler]] = [
    ("check", add_check, cmd_check),
    ("serve", add_serve, cmd_serve),
    ("fix", add_fix, cmd_fix_main),
    ("rollback", add_rollback, cmd_fix_main),
    ("audit", add_audit, cmd_fix_main),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailcheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for _name, add, handler in COMMANDS:
        add(sub).set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return asyncio.run(args.handler(args, settings))
    except MailcheckError as e:
        print(f"mailcheck: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
