"""One firewall model, one evaluator, fix plans on the same model.

The engine uses exactly two functions from here:

    collect_commands() -> list[Command]
        read-only commands whose output the analysis needs (run in the
        engine's one batch);

    analyze(results, *, context) -> FirewallAnalysis
        results maps argv tuples to CommandResult; context (AnalysisContext)
        says which ports, the prober's source address, the host's addresses
        and interfaces. Returns a PortVerdict per bot.models.PortKey (verdict,
        the deciding rule, path), findings and fix plans.

Both are filled in by bot/firewall/api.py.
"""

from bot.firewall.api import (
    AnalysisContext,
    FirewallAnalysis,
    PortVerdict,
    analyze,
    collect_commands,
)
from bot.firewall.parse import parse_all

__all__ = ["AnalysisContext", "FirewallAnalysis", "PortVerdict", "analyze", "collect_commands", "parse_all"]
