"""Approved fixes: policy, server-side plans, apply with lock-out guard, verify, rollback.

Callers (Slack handlers, the CLI) use `FixService` only; see bot/fixes/service.py.
"""

from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome, Snapshot
from bot.fixes.service import FixService

__all__ = ["ApplyOutcome", "FixService", "RollbackOutcome", "Snapshot"]
