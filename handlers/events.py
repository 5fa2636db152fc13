"""Events: the App Home tab opened (manifest: settings.event_subscriptions)."""

from slack_bolt.async_app import AsyncApp

from bot.slack.contracts import Listeners
from bot.slack.requests import HomeOpened


def register(app: AsyncApp, bot: Listeners) -> None:
    @app.event("app_home_opened")
    async def home_opened(event):
        bot.home_opened(HomeOpened.from_event(event))
