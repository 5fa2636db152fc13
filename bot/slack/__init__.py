"""The Slack side of mailcheck.

    bot.slack.app.build_app(settings, inventory, engine, fixes, client=None, *, store) -> AsyncApp
    bot.slack.server.serve(settings) -> None       # `mailcheck serve`
    bot.slack.requests                             # payloads -> typed requests (pure)
    bot.slack.contracts.Fixes, Listeners           # what build_app is given, what listeners call
    bot.slack.fix_buttons.FixButtons               # the one place a fix button meets the fixes

Nothing is imported here: the listeners in handlers/ import only bot.slack.requests and
bot.slack.contracts, and the app (bot.slack.app) registers them.
"""
