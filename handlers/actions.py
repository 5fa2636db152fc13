"""Buttons on a report: Apply, Roll back, Re-check, Show details."""

import re

from slack_bolt.async_app import AsyncApp

from bot.render.blockkit import ACTION_APPLY, ACTION_DETAILS, ACTION_RECHECK, ACTION_ROLLBACK
from bot.slack.bot import MailcheckBot
from bot.slack.requests import Click


def register(app: AsyncApp, bot: MailcheckBot) -> None:
    @app.action(re.compile(rf"^{ACTION_APPLY}(_\d+)?$"))
    async def apply(ack, body, action):
        await bot.fix_click(ack, body, action, "apply")

    @app.action(re.compile(rf"^{ACTION_ROLLBACK}(_\d+)?$"))
    async def rollback(ack, body, action):
        await bot.fix_click(ack, body, action, "rollback")

    @app.action(ACTION_RECHECK)
    async def recheck(ack, body, action):
        await ack()
        bot.recheck(Click.from_payload(body, action))

    @app.action(ACTION_DETAILS)
    async def details(ack, body, action):
        await ack()
        bot.details(Click.from_payload(body, action))
