"""The guide's steps as pure checks: declared commands in, findings out.

The contract (a `Check` class: name, needs, SSH and probe use, `commands(ctx)`,
`evaluate(inp)`) is in bot/checks/base.py; the steps, in the guide's order, are
listed once in bot/checks/registry.py. `evaluate` never does I/O: it reads captured
CommandResults (keyed by argv tuple), the outside probes and the outcomes of the
steps it needs.
"""

from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.registry import REGISTRY, STEPS, all_checks

__all__ = ["REGISTRY", "STEPS", "Check", "CheckContext", "CheckInput", "StepOutcome", "all_checks",
           "status_of"]
