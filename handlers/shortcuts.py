"""The message shortcut "Check mail host" (manifest: features.shortcuts)."""

from slack_bolt.async_app import AsyncApp

from bot.slack.contracts import Listeners
from bot.slack.requests import CHECK_HOST_SHORTCUT, CheckShortcut


def register(app: AsyncApp, bot: Listeners) -> None:
    @app.shortcut(CHECK_HOST_SHORTCUT)
    async def check_host(ack, body):
        await ack()
        bot.check_shortcut(CheckShortcut.from_payload(body))
