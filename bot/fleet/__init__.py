"""Many hosts at once: `mailcheck check all | group:NAME | tag:NAME`.

`check_fleet` (an async iterator) and `run_fleet` (a callback) check inventory hosts
concurrently and hand over one `HostResult` per host as each finishes: plain data (host,
verdict, top cause, duration, error) plus that host's report. The CLI prints a row or a
JSON line per result (bot/fleet/cli.py); a chat message can update a row per result the
same way. Fixes stay per host: nothing here plans or applies one.
"""

from bot.fleet.limits import FdLimit, fitting_concurrency, raise_nofile
from bot.fleet.run import FleetSummary, HostResult, check_fleet, run_fleet, top_cause

__all__ = ["FdLimit", "FleetSummary", "HostResult", "check_fleet", "fitting_concurrency",
           "raise_nofile", "run_fleet", "top_cause"]
