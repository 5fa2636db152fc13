"""The host firewall: one model, one evaluator, fix plans on the same model.

Read it in this order; each layer uses only the ones above it:

    model.py      Tables of Chains of Rules (Matches and a Verdict), a Packet, Routes
    parse/        collected output -> one Ruleset: iptables-save (iptables-nft and
                  legacy), `nft -j list ruleset`; the routes and forwarding sysctls
                  (routes.py); the managers' own state: ufw, firewalld, CSF, fail2ban
    evaluate.py   what the kernel does with one packet -> PacketVerdict: prerouting
                  (nat DNAT/REDIRECT), then input, or forward + postrouting for a
                  packet translated to another host (a published container port)
    peers.py      the peer address space cut into regions the rules' address
                  matches and the routes' devices cannot tell apart (exact ranges,
                  no sample address)
    analysis.py   per mail port (first packet and replies) -> PortVerdict, keyed by
                  bot.models.PortKey: the prober's verdict (inbound), the general
                  one and the ranges that differ (`peers`); the findings; AnalysisContext
    plan/         fixes: base.py is the one planner algorithm (the search on a copy
                  of the model, the SSH guard, the Fix); one class per backend
                  (iptables.py, nft.py, ufw.py, firewalld.py, csf.py, fail2ban.py);
                  the registry PLANNERS. A container engine's own chains and tables
                  (Docker's DOCKER*, docker-bridges; netavark's) are never edited.
    api.py        collect_commands() and analyze(): what the engine calls

collect_commands() -> list[Command]: the read-only commands whose output the
analysis needs (run in the engine's one batch). analyze(results, context=...)
-> FirewallAnalysis: `decisions` (a PortVerdict per PortKey: verdict, blocked_by,
the deciding place, path, reasons), findings, fixes, evidence.

Adding a backend (say a front-end "fwm" that keeps its rules in iptables or nft
tables): write bot/firewall/plan/fwm.py (and bot/firewall/parse/fwm.py if its own
output needs a parser) with a Planner subclass that says `name`; `reads`, the
read-only commands that tell its state (collect_commands() runs them);
`for_host(results, context)`, which builds the planner from their output and sets
`active`; `frontend = True` for a front-end (its places then win over the
iptables / nft planners', and it is reported as in charge); `owns(place)`, the
tables, chains or policies it edits; `keeps(table)`, the tables whose rules it
rebuilds from its own configuration (the iptables and nft planners then do not
persist them); `change_for` (the edit that opens some ports at a place),
`apply` (that edit on the model), `commands` (and their undo), `preconditions`,
`persistence` and `backup` (what its fixes' backup holds); optionally `assemble`
(one reload for all changes), `setting` (its words for what decides a port) and
`findings`. Then add the class to PLANNERS in plan/__init__.py. The
search, the SSH guard, the Fix, collection, ownership and the report need no
edit; tests/unit/test_firewall_registry.py adds such a backend in the test itself.
"""

from bot.firewall.api import (
    AnalysisContext,
    FirewallAnalysis,
    PortVerdict,
    analyze,
    collect_commands,
    parse_all,
)

__all__ = ["AnalysisContext", "FirewallAnalysis", "PortVerdict", "analyze", "collect_commands", "parse_all"]
