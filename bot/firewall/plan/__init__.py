"""Fix plans: one algorithm (base.py), one small class per backend, and the registry.

Each backend module holds a Planner subclass that says which places it edits
(`owns`), how it expresses a change, its commands and rollback, preconditions
and persistence, and how it reads its state from the collected output
(`for_host`, `reads`). PLANNERS is the registry: the analysis collects every
planner's `reads`, builds each planner for the host (planners_for), and gives
every blocked port to the planner that owns the place deciding it (owner_of:
the first active one, front-ends first). Its order is the order the fixes are
listed in.
"""

from __future__ import annotations

from bot.firewall.analysis import AnalysisContext
from bot.firewall.parse import Results
from bot.firewall.plan.base import PlannedFixes, Planner, owner_of
from bot.firewall.plan.csf import CsfPlanner
from bot.firewall.plan.fail2ban import Fail2banPlanner
from bot.firewall.plan.firewalld import FirewalldPlanner
from bot.firewall.plan.iptables import IptablesPlanner
from bot.firewall.plan.nft import NftPlanner
from bot.firewall.plan.ufw import UfwPlanner
from bot.models import Command

PLANNERS: tuple[type[Planner], ...] = (IptablesPlanner, Fail2banPlanner, UfwPlanner, NftPlanner, FirewalldPlanner,
                                       CsfPlanner)


def reads(results: Results | None = None) -> list[Command]:
    """The read-only commands the registered planners need, each once, in registry order: a
    front-end's `then_reads` once `results` show it active (all of them for None)."""
    return list(dict.fromkeys(c for cls in PLANNERS
                              for c in (*cls.reads, *cls.follow_ups(results))))


def planners_for(results: Results, context: AnalysisContext) -> list[Planner]:
    """Every registered planner, built for this host and told about the others."""
    planners = [cls.for_host(results, context) for cls in PLANNERS]
    for p in planners:
        p.others = tuple(q for q in planners if q is not p)
    return planners


__all__ = ["PLANNERS", "PlannedFixes", "Planner", "owner_of", "planners_for", "reads"]
