"""Buttons on a report or the Home tab: Apply, Roll back, Re-check, Details."""

import re

from slack_bolt.async_app import AsyncApp

from bot.render.blockkit import ACTION_APPLY, ACTION_DETAILS, ACTION_RECHECK, ACTION_ROLLBACK
from bot.slack.contracts import Listeners
from bot.slack.requests import Click


def register(app: AsyncApp, bot: Listeners) -> None:
    @app.action(re.compile(rf"^{ACTION_APPLY}(_\d+)?$"))
    async def apply(ack, body, action):
        await ack()
        bot.apply(Click.from_payload(body, action))

    @app.action(re.compile(rf"^{ACTION_ROLLBACK}(_\d+)?$"))
    async def rollback(ack, body, action):
        await ack()
        bot.rollback(Click.from_payload(body, action))

    @app.action(ACTION_RECHECK)
    async def recheck(ack, body, action):
        await ack()
        bot.recheck(Click.from_payload(body, action))

    @app.action(ACTION_DETAILS)
    async def details(ack, body, action):
        await ack()
        bot.details(Click.from_payload(body, action))
