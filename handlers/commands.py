"""The /mailcheck slash command: answered in the ack (ephemeral)."""

from slack_bolt.async_app import AsyncApp

from bot.slack.contracts import Listeners
from bot.slack.requests import SlashCommand


def register(app: AsyncApp, bot: Listeners) -> None:
    @app.command("/mailcheck")
    async def mailcheck(ack, body):
        answer = bot.command(SlashCommand.from_body(body))
        await (ack(response_type="ephemeral", text=answer) if answer else ack())
