"""`mailcheck serve`: the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)."""

from __future__ import annotations

import argparse

from config.settings import Settings


def add_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "serve", help="run the Slack bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP "
        "on MAILCHECK_HTTP_PORT at /slack/events); /healthz tells whether it is connected")


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.slack.server import serve

    await serve(settings)
    return 0
