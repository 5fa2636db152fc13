"""What to back up before a fix, how to restore it exactly, and how to compare.

Everything here is pure: it returns `Step`s (argv + fixed redirections) that
bot.transport turns into shell text with shlex. The backup lives on the
host in a timestamped directory under settings.backup_dir.

- iptables / ip6tables: `iptables-save` into rules.v4 / rules.v6, preceded by
  an empty `*filter` section, so that `iptables-restore < rules.v4` also
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
from bot.transport import Step

EMPTY_FILTER = ("*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]", "COMMIT")
FIREWALL_BACKENDS = ("iptables", "ip6tables", "ufw", "nft", "nftables", "firewalld")


@dataclass(frozen=True)
class BackupPlan:
    directory: str
    backup: list[Step]
    restore: list[Step]
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


def _iptables(d: str, six: bool) -> tuple[list[Step], list[Step], Command]:
    prog = "ip6tables" if six else "iptables"
    path = f"{d}/rules.v{6 if six else 4}"
    backup = [Step(("printf", "%s\\n", *EMPTY_FILTER), stdout=path),
              Step((f"{prog}-save",), stdout=path, append=True)]
    return backup, [Step((f"{prog}-restore",), stdin=path)], Command((f"{prog}-save",))


def _copy(src: str, dst: str) -> tuple[Step, Step]:
    """Back up `src` to `dst`; restore it over the original (into it, for directories)."""
    return Step(("cp", "-a", src, dst)), Step(("cp", "-a", dst, src))


def _copy_dir(src: str, dst: str) -> tuple[Step, Step]:
    return Step(("cp", "-a", src, dst)), Step(("cp", "-a", f"{dst}/.", f"{src}/"))


def backup_plan(fix: Fix, base_dir: str, host: str, change_id: str,
                now: float | None = None) -> BackupPlan:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    d = f"{base_dir.rstrip('/')}/{stamp}-{host}-{change_id}"
    backup: list[Step] = [Step(("mkdir", "-p", "-m", "0700", d))]
    restore: list[Step] = []
    dump: list[Command] = []
    backend = backend_of(fix)
    if backend in ("iptables", "ip6tables", "ufw"):
        for six in (False, True):
            if backend == "ufw" or (backend == "ip6tables") == six:
                b, r, c = _iptables(d, six)
                backup += b
                restore += r
                dump.append(c)
    if backend == "ufw":
        for b, r in (_copy_dir("/etc/ufw", f"{d}/ufw"), _copy("/etc/default/ufw", f"{d}/default-ufw")):
            backup.append(b)
            restore.insert(0, r)
    if backend in ("nft", "firewalld"):
        path = f"{d}/ruleset.nft"
        backup += [Step(("printf", "flush ruleset\\n"), stdout=path),
                   Step(("nft", "list", "ruleset"), stdout=path, append=True)]
        dump.append(Command(("nft", "list", "ruleset")))
        restore.append(Step(("nft", "-f", path)))
    if backend == "firewalld":
        b, r = _copy_dir("/etc/firewalld", f"{d}/firewalld")
        backup.append(b)
        restore = [r, Step(("firewall-cmd", "--reload"))]
    if backend is None:
        restore = [Step(tuple(argv)) for argv in fix.rollback]
    return BackupPlan(directory=d, backup=backup, restore=restore, dump=dump)


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


def step_to_dict(step: Step) -> dict:
    return {"argv": list(step.argv), "stdin": step.stdin, "stdout": step.stdout,
            "append": step.append}


def step_from_dict(data: dict) -> Step:
    return Step(tuple(data["argv"]), data.get("stdin"), data.get("stdout"),
                bool(data.get("append")))
