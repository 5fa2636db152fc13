"""Slack listeners: each turns a payload into a typed request (bot/slack/requests.py), acks,
and hands it to the Listeners (bot.slack.contracts) it was registered with. The app's root
(bot.slack.app.build_app) calls register_all; nothing here imports the app."""

from slack_bolt.async_app import AsyncApp

from bot.slack.contracts import Listeners
from handlers import actions, commands, events, shortcuts, views


def register_all(app: AsyncApp, bot: Listeners) -> None:
    commands.register(app, bot)
    actions.register(app, bot)
    shortcuts.register(app, bot)
    events.register(app, bot)
    views.register(app, bot)
