"""Events: the App Home tab opened (manifest: settings.event_subscriptions)."""

from slack_bolt.async_app import AsyncApp

from bot.slack.bot import MailcheckBot
from bot.slack.requests import HomeOpened


def register(app: AsyncApp, bot: MailcheckBot) -> None:
    @app.event("app_home_opened")
    async def home_opened(event):
        bot.home_opened(HomeOpened.from_event(event))
