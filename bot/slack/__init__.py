"""The Slack side of mailcheck.

    bot.slack.app.build_app(settings, inventory, engine, fixes, client=None, *, store) -> AsyncApp
    bot.slack.server.serve(settings) -> None     # `mailcheck serve`
    bot.slack.contracts.FixService, FixAction    # what build_app is given, what a click is

Nothing is imported here: the listeners in handlers/ import bot.slack.bot, and the app
(bot.slack.app) registers them, so this package's __init__ must not import the app.
"""
