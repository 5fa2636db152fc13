"""`mailcheck check all | group:NAME | tag:NAME`: every selected inventory host, concurrently.

stdout: with --json one JSON report per line (the single-host contract, compact) as each
host finishes; otherwise a table whose rows are printed as hosts finish, then a summary
line. stderr: what runs (hosts, concurrency, deadline, file descriptors) and, with --json,
a line per finished host. Exit status: 2 if any host could not be checked (or the
selection is bad), else 1 if any host's finding says mail cannot flow, else 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from bot.console import Console
from bot.errors import TargetError
from bot.fleet.limits import fitting_concurrency, raise_nofile
from bot.fleet.run import HostResult, run_fleet
from bot.render import fleet as table
from config.inventory import select_hosts


async def cmd_check_fleet(args: argparse.Namespace, console: Console) -> int:
    if args.local or args.identity or args.known_hosts:
        raise TargetError(f"{args.target!r} selects inventory hosts, which bring their own SSH "
                          "settings: -i, --known-hosts and --local are for one ad-hoc host")
    if getattr(args, "domain", None):
        raise TargetError(f"{args.target!r} selects inventory hosts, each checked for its own "
                          "mail domains (the inventory's domain:): --domain is for one host")
    wiring = console.wiring
    hosts = select_hosts(args.target, wiring.inventory)
    engine = wiring.engine(outbound_targets=args.outbound_targets)
    settings = wiring.settings
    limit = raise_nofile()
    concurrency = fitting_concurrency(min(settings.fleet_concurrency, len(hosts)), limit.after)
    deadline = settings.host_deadline_or_default()
    note = "" if concurrency >= min(settings.fleet_concurrency, len(hosts)) else \
        f" (MAILCHECK_FLEET_CONCURRENCY={settings.fleet_concurrency}: fewer, for the fd limit)"
    _err(f"checking {len(hosts)} hosts ({args.target}), {concurrency} at a time{note}, "
         f"each within {deadline:g} s; {limit.describe()}")
    width = max(len("HOST"), *(len(table.one_line(h.name)) for h in hosts))
    if not args.json:
        _out(console, table.header(width))

    finished = itertools.count(1)

    async def on_result(result: HostResult) -> None:
        if args.json:
            _out(console, json.dumps(result.report.to_json_dict()))
            _err(f"[{next(finished)}/{len(hosts)}] {table.row(result, width)}")
        else:
            _out(console, table.row(result, width))

    summary = await run_fleet(engine, hosts, concurrency=concurrency, deadline=deadline,
                              on_result=on_result, steps=args.step)
    if args.json:
        _err(table.footer(summary))
    else:
        _out(console, table.footer(summary))
    return summary.exit_code


def _out(console: Console, text: str) -> None:
    print(text, file=console.out, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
