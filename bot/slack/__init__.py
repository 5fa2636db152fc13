"""The Slack side: build_app() (Bolt AsyncApp), serve() (Socket Mode or HTTP).

    build_app(settings, inventory, engine, fixes, client=None) -> AsyncApp
    serve(settings) -> None          # `mailcheck serve`
    FixService, Engine               # the Protocols injected into build_app
"""

from bot.slack.app import bot_of, build_app
from bot.slack.ports import Engine, FixAction, FixService, InMemoryFixService
from bot.slack.server import serve

__all__ = ["Engine", "FixAction", "FixService", "InMemoryFixService", "bot_of", "build_app", "serve"]
