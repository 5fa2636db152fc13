"""A fleet check as a table for a terminal (pure): a header, a row per host as it finishes,
and a footer that summarises. Host-derived text is made one printable line."""

from __future__ import annotations

import re

from bot.fleet.run import FleetSummary, HostResult

VERDICT = {"ok": "ok", "broken": "BROKEN", "error": "ERROR"}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def one_line(text: str, limit: int = 160) -> str:
    """Control characters (escape sequences, newlines) become one space; long text ends in …"""
    line = _UNPRINTABLE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def header(width: int) -> str:
    return f"{'HOST':<{width}}  {'VERDICT':<7}  {'TIME':>6}  TOP CAUSE"


def row(result: HostResult, width: int) -> str:
    cause = one_line(result.cause) or ("mail can flow" if result.verdict == "ok" else "-")
    return (f"{one_line(result.host):<{width}}  {VERDICT[result.verdict]:<7}  "
            f"{result.duration:>5.1f}s  {cause}")


def footer(summary: FleetSummary) -> str:
    parts = [f"{len(summary.hosts['ok'])} ok"]
    for verdict, what in (("broken", "broken"), ("error", "could not be checked")):
        if names := summary.hosts[verdict]:
            parts.append(f"{len(names)} {what} ({', '.join(names)})")
    text = f"{summary.count} hosts in {summary.elapsed:.1f} s: {'; '.join(parts)}"
    if summary.hosts["broken"]:
        text += ("\nFixes are per host: `mailcheck check HOST` shows a host's fixes, "
                 "`mailcheck fix HOST` applies them.")
    return text
