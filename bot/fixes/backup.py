"""A fix's backup, derived from what the Fix declares (`Fix.backup`, a bot.models.BackupSpec).

This module knows no backend by name: a new kind of fix (a firewall manager's
config file, an MTA's configuration) gets a backup, a test-load, an exact
restore and the dead-man guard by declaring them:

    Fix(..., backup=BackupSpec(rulesets=["iptables"], guard=True))            # iptables
    Fix(..., backup=BackupSpec(paths=["/etc/csf/csf.conf"], reload=[["csf", "-r"]],
                               rulesets=["iptables", "ip6tables"], guard=True))

    backup_for(fix, base_dir, host, change_id) -> Backup
        .take      lines that save everything into a fresh timestamped directory
        .test      lines that each exit 0 only if a saved ruleset would load
                   (`K-restore --test`, `nft -c -f`); run before the guard is armed
        .restore   lines that put everything back: paths, then rulesets, then `reload`
        .undo      the declared per-rule undo, for when a ruleset backup will not load
        .dump      read-only commands that print the rulesets (before/after, drift)
        .guard     arm the dead-man job

Everything here is pure: it returns `ScriptLine`s (argv + fixed redirections)
that bot.transport turns into shell text with shlex. A path is copied by a
fixed `sh -c` text whose only variable words are positional arguments.

- iptables kinds: `K-save` into rules.K, preceded by an empty `*filter` section,
  so that `K-restore` also empties a filter table that did not exist before.
- nft: `flush ruleset` + `nft list ruleset`, restored atomically by `nft -f`
  (which fails, atomically, when iptables-nft's xt rules are in the ruleset:
  the test-load says so before anything changes; and where nft can translate
  them it would replace them by native rules, comments lost: prefer nft_tables).
- nft_tables: each table on its own, `table F T; delete table F T; <listing>`,
  atomic per table and leaving every other table alone.
- nothing saved (`BackupSpec()` or no declaration): the restore is Fix.rollback.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from bot.models import BackupSpec, Command, Fix, RulesetKind
from bot.transport import ScriptLine

EMPTY_FILTER = ("*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]", "COMMIT")

# Fixed scripts for copying a declared path; $1 is the path, $2 its copy in the backup.
_SAVE_PATH = ('mkdir -p "${2%/*}"; if [ -e "$1" ] || [ -L "$1" ]; then cp -a "$1" "$2"; '
              'else : >"$2.absent"; fi')
_RESTORE_PATH = ('if [ -e "$2.absent" ]; then rm -rf "$1"; '
                 'elif [ -d "$2" ] && [ ! -L "$2" ]; then mkdir -p "$1" && '
                 'find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} + && cp -a "$2/." "$1/"; '
                 'else cp -a "$2" "$1"; fi')


@dataclass(frozen=True)
class Backup:
    """One change's backup: where it goes and the script lines that take, test, restore it."""

    directory: str
    take: list[ScriptLine]
    restore: list[ScriptLine]
    test: list[ScriptLine] = field(default_factory=list)
    undo: list[ScriptLine] = field(default_factory=list)
    dump: list[Command] = field(default_factory=list)  # the rulesets, for before/after
    guard: bool = False

    @property
    def armed(self) -> str:
        return f"{self.directory}/deadman.armed"

    @property
    def log(self) -> str:
        return f"{self.directory}/deadman.log"

    def undo_instead(self) -> Backup:
        """This backup with the declared per-rule undo as its restore (a snapshot would not load)."""
        return replace(self, restore=list(self.undo), test=[])


def dump_command(kind: RulesetKind) -> Command:
    return Command(("nft", "list", "ruleset") if kind == "nft" else (f"{kind}-save",))


def _ruleset(d: str, kind: RulesetKind) -> tuple[list[ScriptLine], ScriptLine, ScriptLine]:
    """(take, test, restore) of one ruleset."""
    if kind == "nft":
        path = f"{d}/ruleset.nft"
        take = [ScriptLine(("printf", "flush ruleset\\n"), stdout=path),
                ScriptLine(("nft", "list", "ruleset"), stdout=path, append=True)]
        return take, ScriptLine(("nft", "-c", "-f", path)), ScriptLine(("nft", "-f", path))
    path = f"{d}/rules.{kind}"
    take = [ScriptLine(("printf", "%s\\n", *EMPTY_FILTER), stdout=path),
            ScriptLine((f"{kind}-save",), stdout=path, append=True)]
    return (take, ScriptLine((f"{kind}-restore", "--test"), stdin=path),
            ScriptLine((f"{kind}-restore",), stdin=path))


# $1 family, $2 table, $3 the file: a table that is absent is saved as "create, delete".
_SAVE_NFT_TABLE = ('t=$(nft list tables "$1") || exit 1; '
                   'printf "table %s %s\\ndelete table %s %s\\n" "$1" "$2" "$1" "$2" >"$3" || exit 1; '
                   'if printf "%s\\n" "$t" | grep -qx "table $1 $2"; then '
                   'nft list table "$1" "$2" >>"$3" || exit 1; fi')


def _nft_table(d: str, table: str) -> tuple[ScriptLine, ScriptLine, ScriptLine, Command]:
    """(take, test, restore, dump) of one native nft table."""
    family, name = table.split()
    path = f"{d}/table.{family}.{name}.nft"
    return (ScriptLine(("sh", "-c", _SAVE_NFT_TABLE, "sh", family, name, path)),
            ScriptLine(("nft", "-c", "-f", path)), ScriptLine(("nft", "-f", path)),
            Command(("nft", "list", "table", family, name)))


def _path(d: str, path: str) -> tuple[ScriptLine, ScriptLine]:
    """(take, restore) of one declared file or directory."""
    saved = f"{d}/files{path}"
    return (ScriptLine(("sh", "-c", _SAVE_PATH, "sh", path, saved)),
            ScriptLine(("sh", "-c", _RESTORE_PATH, "sh", path, saved)))


def _lines(argvs: list[list[str]]) -> list[ScriptLine]:
    return [ScriptLine(tuple(argv)) for argv in argvs]


def backup_for(fix: Fix, base_dir: str, host: str, change_id: str,
               now: float | None = None) -> Backup:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    d = f"{base_dir.rstrip('/')}/{stamp}-{host}-{change_id}"
    spec = fix.backup or BackupSpec()
    take = [ScriptLine(("mkdir", "-p", "-m", "0700", d))]
    test: list[ScriptLine] = []
    restore: list[ScriptLine] = []
    for path in spec.paths:
        t, r = _path(d, path)
        take.append(t)
        restore.append(r)
    for kind in spec.rulesets:
        t, check, r = _ruleset(d, kind)
        take += t
        test.append(check)
        restore.append(r)
    table_dumps = []
    for table in spec.nft_tables:
        t, check, r, dump_one = _nft_table(d, table)
        take.append(t)
        test.append(check)
        restore.append(r)
        table_dumps.append(dump_one)
    if spec.saves_anything:
        restore += _lines(spec.reload)
    else:
        restore = _lines(fix.rollback)
    dump = [dump_command(k) for k in dict.fromkeys([*spec.rulesets, *spec.compare])] + table_dumps
    return Backup(directory=d, take=take, restore=restore, test=test, undo=_lines(spec.undo),
                  dump=dump, guard=spec.guard)


_COUNTERS = re.compile(r"\[\d+:\d+\]")
# nft's own counters and set-element countdowns change with traffic and time, not with rules
# (Docker's nftables backend counts every published port's packets).
_NFT_RUNNING = re.compile(r" counter packets \d+ bytes \d+| expires [0-9dhms]+")


def normalize_ruleset(text: str) -> str:
    """iptables-save / nft text without comments, counters and empty default tables."""
    lines = [_NFT_RUNNING.sub(lambda m: " counter" if "counter" in m.group() else "",
                              _COUNTERS.sub("[0:0]", ln.rstrip())) for ln in text.splitlines()]
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
