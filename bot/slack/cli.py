"""`mailcheck serve`: the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)."""

from __future__ import annotations

import argparse

from bot.console import Console


def add_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "serve", help="run the Slack bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP "
        "on MAILCHECK_HTTP_PORT at /slack/events); /healthz tells whether it is connected")


async def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """`mailcheck serve`: runs until SIGINT/SIGTERM."""
    from bot.slack.server import serve  # Slack's libraries cost ~1 s: only when serving

    await serve(console.wiring.settings, wiring=console.wiring)
    return 0
