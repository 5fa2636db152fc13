"""File descriptors for a fleet check: raise the soft limit, and fit the concurrency to it.

A host in flight holds about FDS_PER_HOST descriptors at most: its SSH socket (two through
a jump host), ten outside probes at once (five ports, IPv4 and IPv6) and the short-lived
UDP socket that asks the route for the probes' source address; bench/fleet.py measures
the real peak. Rather than run into EMFILE mid-check (which would turn hosts into false
errors), a fleet runs fewer hosts at once when the limit cannot be raised far enough.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

FDS_PER_HOST = 16
RESERVE = 64  # descriptors kept free for the rest of the process (logging, DNS, the store)


@dataclass(frozen=True)
class FdLimit:
    before: int  # the soft limit found
    after: int  # the soft limit now
    hard: int
    error: str | None = None  # why it could not be raised

    def describe(self) -> str:
        if self.after > self.before:
            return f"file descriptors: soft limit raised from {self.before} to {self.after}"
        why = f" (could not raise it: {self.error})" if self.error else ""
        return f"file descriptors: soft limit {self.after} (hard {_text(self.hard)}){why}"


def _text(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY else str(n)


def raise_nofile() -> FdLimit:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (or the kernel's nr_open when the
    hard limit is unlimited), where the process may; say what it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft == resource.RLIM_INFINITY or soft >= target:
        return FdLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        return FdLimit(soft, soft, hard, str(e))
    return FdLimit(soft, target, hard)


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def fds_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return RESERVE


def fitting_concurrency(wanted: int, limit: int, in_use: int | None = None) -> int:
    """`wanted`, or as many hosts as `limit` descriptors hold at FDS_PER_HOST each (at least 1)."""
    free = limit - (fds_in_use() if in_use is None else in_use) - RESERVE
    return max(1, min(wanted, free // FDS_PER_HOST))
