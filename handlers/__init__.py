"""Slack listeners: each a few lines that call into bot/slack."""

from slack_bolt.async_app import AsyncApp

from bot.slack.bot import MailcheckBot
from handlers import actions, commands, events, shortcuts, views


def register_all(app: AsyncApp, bot: MailcheckBot) -> None:
    commands.register(app, bot)
    actions.register(app, bot)
    shortcuts.register(app, bot)
    events.register(app, bot)
    views.register(app, bot)
