"""What to back up before a fix, how to restore it exactly, and how to compare.

Everything here is pure: it returns `ScriptLine`s (argv + fixed redirections) that
bot.transport turns into shell text with shlex. The backup lives on the
host in a timestamped directory under settings.backup_dir.

- iptables / ip6tables: for each variant the fix's commands use (iptables,
  ip6tables, iptables-legacy, ...), `<variant>-save` into rules.<variant>,
  preceded by an empty `*filter` section, so that `<variant>-restore` also
  empties a filter table that did not exist before the fix.
- ufw: both of the above (ufw's runtime is iptables rules) plus copies of
  /etc/ufw and /etc/default/ufw; restore copies the files back and restores
  the kernel rules with iptables-restore (exact, even when ufw was enabled or
  disabled by the fix).
- nft: `flush ruleset` + `nft list ruleset`, restored atomically by `nft -f`.
- firewalld: a copy of /etc/firewalld plus the nft ruleset; restore copies the
  files back and reloads.
- other kinds (service, tools): nothing to copy; restore runs fix.rollback.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from bot.models import Command, Fix
from bot.transport import ScriptLine

EMPTY_FILTER = ("*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]", "COMMIT")
FIREWALL_BACKENDS = ("iptables", "ip6tables", "ufw", "nft", "nftables", "firewalld")


@dataclass(frozen=True)
class Backup:
    """One change's backup: where it goes, the script lines that take and restore it, and
    the commands that dump the ruleset (for before/after)."""

    directory: str
    backup: list[ScriptLine]
    restore: list[ScriptLine]
    dump: list[Command] = field(default_factory=list)  # the ruleset, for before/after

    @property
    def armed(self) -> str:
        return f"{self.directory}/deadman.armed"

    @property
    def log(self) -> str:
        return f"{self.directory}/deadman.log"


def backend_of(fix: Fix) -> str | None:
    backend = (fix.backend or "").lower()
    if backend == "nftables":
        return "nft"
    return backend if backend in FIREWALL_BACKENDS else None


_IPT = re.compile(r"^ip6?tables(-nft|-legacy)?$")


def _iptables(d: str, prog: str) -> tuple[list[ScriptLine], list[ScriptLine], Command]:
    """Back up / restore the tables of one iptables variant (iptables, ip6tables-legacy, ...)."""
    path = f"{d}/rules.{prog}"
    backup = [ScriptLine(("printf", "%s\\n", *EMPTY_FILTER), stdout=path),
              ScriptLine((f"{prog}-save",), stdout=path, append=True)]
    return backup, [ScriptLine((f"{prog}-restore",), stdin=path)], Command((f"{prog}-save",))


def iptables_variants(fix: Fix, backend: str | None) -> list[str]:
    """The iptables programs whose tables the fix edits (ufw: both families)."""
    if backend == "ufw":
        return ["iptables", "ip6tables"]
    if backend not in ("iptables", "ip6tables"):
        return []
    found = [argv[0] for argv in fix.commands if argv and _IPT.match(argv[0])]
    return list(dict.fromkeys(found)) or [backend]


def _copy(src: str, dst: str) -> tuple[ScriptLine, ScriptLine]:
    """Back up `src` to `dst`; restore it over the original (into it, for directories)."""
    return ScriptLine(("cp", "-a", src, dst)), ScriptLine(("cp", "-a", dst, src))


def _copy_dir(src: str, dst: str) -> tuple[ScriptLine, ScriptLine]:
    return ScriptLine(("cp", "-a", src, dst)), ScriptLine(("cp", "-a", f"{dst}/.", f"{src}/"))


def backup_for(fix: Fix, base_dir: str, host: str, change_id: str,
                now: float | None = None) -> Backup:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    d = f"{base_dir.rstrip('/')}/{stamp}-{host}-{change_id}"
    backup: list[ScriptLine] = [ScriptLine(("mkdir", "-p", "-m", "0700", d))]
    restore: list[ScriptLine] = []
    dump: list[Command] = []
    backend = backend_of(fix)
    for prog in iptables_variants(fix, backend):
        b, r, c = _iptables(d, prog)
        backup += b
        restore += r
        dump.append(c)
    if backend == "ufw":
        for b, r in (_copy_dir("/etc/ufw", f"{d}/ufw"), _copy("/etc/default/ufw", f"{d}/default-ufw")):
            backup.append(b)
            restore.insert(0, r)
    if backend in ("nft", "firewalld"):
        path = f"{d}/ruleset.nft"
        backup += [ScriptLine(("printf", "flush ruleset\\n"), stdout=path),
                   ScriptLine(("nft", "list", "ruleset"), stdout=path, append=True)]
        dump.append(Command(("nft", "list", "ruleset")))
        restore.append(ScriptLine(("nft", "-f", path)))
    if backend == "firewalld":
        b, r = _copy_dir("/etc/firewalld", f"{d}/firewalld")
        backup.append(b)
        restore = [r, ScriptLine(("firewall-cmd", "--reload"))]
    if backend is None:
        restore = [ScriptLine(tuple(argv)) for argv in fix.rollback]
    return Backup(directory=d, backup=backup, restore=restore, dump=dump)


_COUNTERS = re.compile(r"\[\d+:\d+\]")


def normalize_ruleset(text: str) -> str:
    """iptables-save / nft text without comments, counters and empty default tables."""
    lines = [_COUNTERS.sub("[0:0]", ln.rstrip()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.lstrip().startswith("#")]
    return "\n".join(_drop_empty_filter(lines))


def _drop_empty_filter(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        if tuple(lines[i:i + 5]) == EMPTY_FILTER:
            i += 5
            continue
        out.append(lines[i])
        i += 1
    return out


def drop_new_filter_lines(dumps: list[tuple[str, str]], nft_based: set[str]) -> list[ScriptLine]:
    """Restore lines that delete a filter table the fix created (iptables-nft only).

    dumps: (save program, its output before the fix). iptables-restore cannot
    delete a table, so without this a rollback would leave an empty filter
    table where there was none. Legacy tables cannot be unloaded: not exact there.
    """
    lines = []
    for save, text in dumps:
        prog = save.removesuffix("-save")
        if prog in nft_based and not re.search(r"^\*filter\s*$", text, re.M):
            nft_family = "ip6" if prog.startswith("ip6") else "ip"
            lines.append(ScriptLine(("nft", "delete", "table", nft_family, "filter"), check=False))
    return lines


def line_to_dict(line: ScriptLine) -> dict:
    return {"argv": list(line.argv), "stdin": line.stdin, "stdout": line.stdout,
            "append": line.append, "check": line.check}


def line_from_dict(data: dict) -> ScriptLine:
    return ScriptLine(tuple(data["argv"]), data.get("stdin"), data.get("stdout"),
                      bool(data.get("append")), bool(data.get("check", True)))
