"""One change at a time per host, decided on the host itself.

The store's lock (bot/store.py) only binds processes that share one database.
This lock lives on the host, under the backup directory (`BACKUP_DIR/.lock`),
so two mailcheck instances with different databases, on different machines or
reaching the host by another name, still never overlap their backups and guards.

Taking it is one atomic rename: the lock directory is built under a private
name with its files (holder, token, until) and renamed into place with
`mv -T`, which fails when the lock exists. A lock past its `until` (its
holder died) is moved aside and taken. Only the token's owner releases it (a
rename, then removal). The scripts are fixed text; the path, holder text,
token and ttl are positional arguments.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass

from bot.models import Command
from bot.transport import Transport

BUSY = 3  # exit status of the acquire script when someone else holds the lock

_ACQUIRE = r'''d=$1; holder=$2; token=$3; ttl=$4
mkdir -p -m 0700 "${d%/*}" || exit 2
now=$(date +%s); tmp="$d.new.$token"
rm -rf "$tmp"; mkdir -m 0700 "$tmp" || exit 2
printf '%s\n' "$holder" >"$tmp/holder"; printf '%s\n' "$token" >"$tmp/token"
echo $((now + ttl)) >"$tmp/until"
if mv -T "$tmp" "$d" 2>/dev/null; then echo acquired; exit 0; fi
until=$(cat "$d/until" 2>/dev/null); case $until in ''|*[!0-9]*) until=$((now + 1));; esac
if [ "$now" -gt "$until" ] && mv -T "$d" "$d.stale.$token" 2>/dev/null; then
  echo "took over a stale lock:"; cat "$d.stale.$token/holder"; rm -rf "$d.stale.$token"
  if mv -T "$tmp" "$d" 2>/dev/null; then echo acquired; exit 0; fi
fi
rm -rf "$tmp"; cat "$d/holder" 2>/dev/null || echo "another mailcheck (holder unknown)"; exit 3
'''
_RELEASE = r'''d=$1; token=$2
[ "$(cat "$d/token" 2>/dev/null)" = "$token" ] || exit 0
mv -T "$d" "$d.released.$token" && rm -rf "$d.released.$token"
'''


@dataclass(frozen=True)
class HostLock:
    path: str  # BACKUP_DIR/.lock on the host
    token: str  # the change id
    holder: str  # who we are, as the other instance will read it
    ttl: int  # seconds after which a lock whose holder vanished is taken over

    @classmethod
    def for_change(cls, backup_dir: str, change_id: str, who: str, db_path: str,
                   ttl: float) -> HostLock:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        holder = (f"mailcheck pid {os.getpid()} on {socket.gethostname()} (database "
                  f"{os.path.abspath(db_path)}): {who}, since {when}")
        return cls(f"{backup_dir.rstrip('/')}/.lock", change_id, holder, int(ttl))

    def acquire_command(self) -> Command:
        return Command(("sh", "-c", _ACQUIRE, "sh", self.path, self.holder, self.token,
                        str(self.ttl)), timeout=10)

    def release_command(self) -> Command:
        return Command(("sh", "-c", _RELEASE, "sh", self.path, self.token), timeout=10)


async def acquire(t: Transport, lock: HostLock, wait: float, poll: float = 1.0) -> str | None:
    """Take the host's lock, waiting up to `wait` s: None when taken, else who holds it.

    Raises TransportError. Any exit other than taken or busy is said as the holder text."""
    deadline = time.monotonic() + wait
    while True:
        [r] = await t.run([lock.acquire_command()], step="lock")
        if r.ok:
            return None
        if r.exit_status != BUSY:
            return f"(the lock {lock.path} could not be taken: {r.stderr.strip() or r.exit_status})"
        if time.monotonic() >= deadline:
            return r.stdout.strip()
        await asyncio.sleep(poll)


async def release(t: Transport, lock: HostLock) -> bool:
    [r] = await t.run([lock.release_command()], step="lock")
    return r.ok
