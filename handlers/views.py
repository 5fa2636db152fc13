"""Submitted modals (e.g. a fix's break-glass reason)."""

import re

from slack_bolt.async_app import AsyncApp

from bot.slack.contracts import Listeners
from bot.slack.requests import ViewSubmission


def register(app: AsyncApp, bot: Listeners) -> None:
    @app.view(re.compile(r"^mailcheck_"))
    async def submitted(ack, body, view):
        await ack()
        bot.view_submitted(ViewSubmission.from_payload(body, view))
