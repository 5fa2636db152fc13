"""What a fix leaves as evidence: the command log, precondition fingerprints, what changed.

Pure helpers shared by apply, rollback and reconcile.
"""

from __future__ import annotations

import difflib
import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from bot.firewall.parse.iptables import normalize_iptables_save
from bot.firewall.parse.nft import normalize_nft
from bot.fixes.backup import normalize_ruleset
from bot.models import CommandResult, Fix, Precondition
from bot.transport import FAILED_LINE, ScriptLine, failed_lines


@dataclass(frozen=True)
class CommandLog:
    command: str
    exit_status: int | None
    stdout: str
    stderr: str

    @classmethod
    def of(cls, r: CommandResult) -> CommandLog:
        return cls(r.command.display, r.exit_status, r.stdout[-4000:], r.stderr[-4000:])

    @classmethod
    def note(cls, what: str, detail: str = "") -> CommandLog:
        """Something mailcheck saw or decided that is not a command's output."""
        return cls(f"({what})", None, "", detail)


def fingerprint(stdout: str, normalize: str = "raw") -> str:
    """sha256 of a precondition's normalised stdout, as the planners compute it.

    "iptables-save" uses the firewall package's normalize_iptables_save (the
    planner hashes with it); "nft" uses nft.normalize_nft (likewise).
    """
    if normalize == "iptables-save":
        text = normalize_iptables_save(stdout)
    elif normalize == "nft":
        text = normalize_nft(stdout)
    else:
        text = stdout
    return hashlib.sha256(text.encode()).hexdigest()


def precondition_problem(pre: Precondition, result: CommandResult) -> str | None:
    shown = f"`{result.command.display}`"
    if pre.expect_failure:
        if result.exit_status == 0:
            return f"{pre.description}: {shown} succeeded now, so the fix is not needed any more"
        if result.exit_status is None:
            return f"{pre.description}: {shown} did not finish"
    elif pre.expect_exit is not None and result.exit_status != pre.expect_exit:
        return f"{pre.description}: {shown} exited {result.exit_status}, expected {pre.expect_exit}"
    if pre.expect_sha256 and fingerprint(result.stdout, pre.normalize) != pre.expect_sha256:
        return f"{pre.description}: {shown} shows something different now"
    return None


def same_ruleset(a: str, b: str) -> bool:
    return normalize_ruleset(a) == normalize_ruleset(b)


def ruleset_change(before: str, after: str, limit: int = 1500) -> str:
    """What differs between two dumps, as -/+ lines (normalised: no counters, no comments)."""
    a, b = normalize_ruleset(before).splitlines(), normalize_ruleset(after).splitlines()
    lines = [ln for ln in difflib.unified_diff(a, b, lineterm="", n=0)
             if ln[:1] in "-+" and not ln.startswith(("---", "+++"))]
    text = "\n".join(lines) or "(no difference)"
    return text if len(text) <= limit else text[:limit] + "\n…"


def left_on_host(before: str, after: str | None) -> str:
    """Say what the host's rulesets show compared with before the fix."""
    if after is None:
        return "unknown: the rulesets could not be read"
    if not before and not after:
        return "unknown: this fix's backup saves no ruleset to compare; look at the host"
    if same_ruleset(before, after):
        return "the rulesets equal those before the fix"
    return "the rulesets differ from those before the fix:\n" + ruleset_change(before, after)


def restore_failure(lines: Sequence[ScriptLine], fix: Fix, r: CommandResult) -> str:
    """What failed in a restore, exactly: its lines, and whether the saved state was put back.

    A restore puts the saved files and rulesets back, then runs the fix's declared reload
    (e.g. `update-exim4.conf` and a restart). When only the reload failed, the files are
    back but the daemon may not run on them: still NOT restored, said as such.
    """
    bad = [lines[i] for i in failed_lines(r.stderr) if i < len(lines)]
    said = "\n".join(ln for ln in r.stderr.splitlines() if not ln.startswith(FAILED_LINE))
    said = said.strip()[-500:] or f"exit {r.exit_status}"
    if not bad:
        return said
    reloads = {tuple(argv) for argv in (fix.backup.reload if fix.backup else [])}
    names = ", ".join(f"`{shlex.join(ln.argv)}`" for ln in bad)
    if all(ln.argv in reloads for ln in bad):
        return (f"the saved files and rulesets were put back, then {names} failed: {said}; "
                "the running daemon may not use the restored configuration")
    return f"{names} failed: {said}"
