"""The /mailcheck slash command."""

from slack_bolt.async_app import AsyncApp

from bot.slack.bot import MailcheckBot


def register(app: AsyncApp, bot: MailcheckBot) -> None:
    @app.command("/mailcheck")
    async def mailcheck(ack, body):
        await bot.command(ack, body)
