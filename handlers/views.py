"""Submitted modals (e.g. a fix's break-glass reason) go to the fix service."""

import re

from slack_bolt.async_app import AsyncApp

from bot.slack.bot import MailcheckBot


def register(app: AsyncApp, bot: MailcheckBot) -> None:
    @app.view(re.compile(r"^mailcheck_"))
    async def submitted(ack, body, view):
        await bot.view_submission(ack, body, view)
