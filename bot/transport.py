"""Running commands on a host: over SSH (asyncssh) or locally.

Every command is an argv tuple. The one place where argv becomes shell text
is `build_script` (shlex.quote on every word); nothing a user typed is ever
pasted into a command line.

A batch of commands runs as one remote script over one channel: one round
trip for all of a check's commands. Inside the script the commands run
concurrently, each wrapped in `timeout`, and their stdout, stderr and exit
status come back framed by a random boundary.

What a host sends is bounded, so a fleet's memory is too: the script sends at most
`max_output` + 1 bytes of each command's stdout and stderr (a longer one is not read:
the command counts as failed, exit status None, and its step says it could not tell,
never judging part of a ruleset), and mailcheck stops reading a batch beyond
`max_host_output` bytes (an error of that batch).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncssh

from bot.errors import (
    AuthError,
    CommandTimeout,
    ConnectionLost,
    HostKeyError,
    OutputTooLarge,
    TransportError,
    UnreachableError,
)
from bot.models import Command, CommandResult
from config.inventory import Host, Inventory, parse_target
from config.settings import Settings

_MARK = re.compile(rb"^(?P<b>[0-9a-f]{32}) (?P<i>\d+) (?P<k>[oer])$", re.M)


def command_line(cmd: Command) -> str:
    """argv -> shell words, wrapped in `timeout`. Quoting happens only here."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cmd.env if re.fullmatch(r"[A-Z_]+", k))
    budget = max(1, int(round(cmd.timeout)))
    words = ["timeout", "-k", "2", str(budget), *cmd.argv]
    return f"{env} {shlex.join(words)}".strip()


MAX_OUTPUT: int = Settings.model_fields["max_output"].default  # of one command's stdout, stderr
MAX_HOST_OUTPUT: int = Settings.model_fields["max_host_output"].default  # of one batch


def build_script(commands: Sequence[Command], boundary: str, max_output: int = MAX_OUTPUT) -> str:
    """One POSIX sh script that runs `commands` concurrently and frames their output
    (at most `max_output` + 1 bytes of each stdout and stderr; all of it without `head`)."""
    lines = [
        "LC_ALL=C LANG=C; export LC_ALL LANG",
        'd=$(mktemp -d) || exit 125',
        "trap 'rm -rf \"$d\"' EXIT",
        f"if command -v head >/dev/null; then mc_out() {{ head -c {int(max_output) + 1} \"$1\"; }}; "
        'else mc_out() { cat "$1"; }; fi',
        f"printf '%s\\n' {boundary}-start",
    ]
    for i, cmd in enumerate(commands):
        lines.append(
            f'{{ {command_line(cmd)} >"$d/{i}.o" 2>"$d/{i}.e" </dev/null; echo $? >"$d/{i}.r"; }} &'
        )
    lines.append("wait")
    lines.append(f"for i in {' '.join(str(i) for i in range(len(commands)))}; do")
    for kind in "oer":
        read = "mc_out" if kind in "oe" else "cat"
        lines.append(f"  printf '\\n%s %s {kind}\\n' {boundary} \"$i\"; {read} \"$d/$i.{kind}\" 2>/dev/null")
    lines.append("done")
    return "\n".join(lines) + "\n"


def parse_script_output(
    raw: bytes, boundary: str, commands: Sequence[Command], max_output: int = MAX_OUTPUT
) -> list[CommandResult] | None:
    """Split the framed output back into one CommandResult per command. A command whose
    stdout or stderr is longer than `max_output` is not read: exit status None, the reason
    in stderr.

    Returns None when the script never started (e.g. sudo refused).
    """
    start = f"{boundary}-start\n".encode()
    if start not in raw:
        return None
    raw = raw.split(start, 1)[1]
    parts: dict[tuple[int, str], bytes] = {}
    marks = [m for m in _MARK.finditer(raw) if m["b"].decode() == boundary]
    for n, m in enumerate(marks):
        end = marks[n + 1].start() - 1 if n + 1 < len(marks) else len(raw)
        parts[(int(m["i"]), m["k"].decode())] = raw[m.end() + 1 : max(m.end() + 1, end)]
    results = []
    for i, cmd in enumerate(commands):
        if over := [n for k, n in (("o", "stdout"), ("e", "stderr"))
                    if len(parts.get((i, k), b"")) > max_output]:
            results.append(CommandResult(cmd, None, "", f"mailcheck: {' and '.join(over)} longer "
                                         f"than {max_output} bytes, not read (MAILCHECK_MAX_OUTPUT)"))
            continue
        rc_text = parts.get((i, "r"), b"").strip()
        rc = int(rc_text) if rc_text.isdigit() else None
        results.append(
            CommandResult(
                command=cmd,
                exit_status=rc,
                stdout=parts.get((i, "o"), b"").decode("utf-8", "replace"),
                stderr=parts.get((i, "e"), b"").decode("utf-8", "replace"),
                timed_out=rc in (124, 137),
            )
        )
    return results


class Transport(Protocol):
    """Runs batches of commands on one host."""

    name: str

    async def run(self, commands: Sequence[Command], *, step: str = "") -> list[CommandResult]:
        """Run `commands` (concurrently) and return their results in order.

        Raises TransportError (or a subclass) when the host cannot be talked to;
        a command's own failure is in its CommandResult.
        """
        ...

    async def close(self) -> None: ...


async def read_capped(stream, limit: int, host: str) -> bytes:
    """All of `stream` (an asyncio or asyncssh reader of bytes), or OutputTooLarge beyond
    `limit` bytes."""
    buf = bytearray()
    while chunk := await stream.read(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise OutputTooLarge(f"the host sent more than {limit} bytes of output; the batch was "
                                 "not read (MAILCHECK_MAX_HOST_OUTPUT)", host=host)
    return bytes(buf)


async def _run_batch(transport, commands: Sequence[Command], step: str) -> list[CommandResult]:
    if not commands:
        return []
    boundary = secrets.token_hex(16)
    max_output = getattr(transport, "max_output", MAX_OUTPUT)
    script = build_script(commands, boundary, max_output)
    budget = max(c.timeout for c in commands) + 10
    try:
        raw, err = await asyncio.wait_for(transport._exec(script), budget)
    except TimeoutError as e:
        raise CommandTimeout(
            f"commands did not finish within {budget:.0f}s", host=transport.name, step=step
        ) from e
    results = parse_script_output(raw, boundary, commands, max_output)
    if results is None:
        why = err.decode("utf-8", "replace").strip() or "no output"
        if "sudo" in why:
            why += " (the user needs passwordless sudo: mailcheck runs `sudo -n`)"
        raise TransportError(f"could not run commands: {why}", host=transport.name, step=step)
    return results


class LocalTransport:
    """Runs commands on this machine (mailcheck installed on the mail server itself)."""

    def __init__(self, name: str = "localhost", sudo: bool = False, *, max_output: int = MAX_OUTPUT,
                 max_host_output: int = MAX_HOST_OUTPUT) -> None:
        self.name = name
        self.sudo = sudo and os.geteuid() != 0
        self.max_output, self.max_host_output = max_output, max_host_output

    async def _exec(self, script: str) -> tuple[bytes, bytes]:
        argv = ["sudo", "-n", "sh", "-c", script] if self.sudo else ["sh", "-c", script]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.gather(read_capped(proc.stdout, self.max_host_output, self.name),
                                            read_capped(proc.stderr, self.max_host_output, self.name))
            await proc.wait()
            return out, err
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise

    async def run(self, commands: Sequence[Command], *, step: str = "") -> list[CommandResult]:
        return await _run_batch(self, commands, step)

    async def close(self) -> None:
        return None


class SSHTransport:
    """One asyncssh connection per host; at most `max_channels` channels at once."""

    def __init__(self, host: Host, settings: Settings, jump: Host | None = None) -> None:
        self.host = host
        self.name = host.name
        self.settings = settings
        self.jump = jump
        self._conn: asyncssh.SSHClientConnection | None = None
        self._jump_conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(settings.max_channels)
        self.max_output, self.max_host_output = settings.max_output, settings.max_host_output

    def _options(self, host: Host) -> dict:
        opts: dict = {
            "port": host.port,
            "username": host.user,
            "connect_timeout": self.settings.connect_timeout,
            "keepalive_interval": self.settings.keepalive_interval,
            "keepalive_count_max": 3,
            # known_hosts=None would disable checking: never pass None.
            "known_hosts": str(host.known_hosts) if host.known_hosts else
            str(Path("~/.ssh/known_hosts").expanduser()),
        }
        if host.identity_file:
            opts["client_keys"] = [str(host.identity_file)]
            opts["agent_path"] = None
        return opts

    async def _connect_one(self, host: Host, tunnel=None) -> asyncssh.SSHClientConnection:
        key = host.identity_file
        if key is not None and not os.access(key, os.R_OK):
            why = "does not exist" if not Path(key).exists() else "cannot be read by this user"
            raise AuthError(f"the identity file {key} {why} (identity_file of {host.name} in the "
                            "inventory, or -i)", host=host.name, step="connect")
        opts = self._options(host)
        if not Path(opts["known_hosts"]).is_file():
            raise HostKeyError(
                f"no known_hosts file at {opts['known_hosts']}: mailcheck never accepts an "
                "unknown host key; add the host's key (ssh-keyscan, checked out of band)",
                host=host.name, step="connect",
            )
        try:
            return await asyncssh.connect(host.address, tunnel=tunnel, **opts)
        except asyncssh.HostKeyNotVerifiable as e:
            raise HostKeyError(
                f"host key of {host.address}:{host.port} is not in {opts['known_hosts']} or has "
                f"changed ({e.reason}); refusing to connect", host=host.name, step="connect",
            ) from e
        except asyncssh.PermissionDenied as e:
            raise AuthError(
                f"{host.user}@{host.address} refused our key ({e.reason})",
                host=host.name, step="connect",
            ) from e
        except asyncssh.KeyImportError as e:
            raise AuthError(f"cannot read identity file: {e}", host=host.name, step="connect") from e
        except (TimeoutError, asyncssh.ConnectionLost) as e:
            raise UnreachableError(
                f"no SSH answer from {host.address}:{host.port} within "
                f"{self.settings.connect_timeout:.0f}s", host=host.name, step="connect",
            ) from e
        except asyncssh.Error as e:
            raise TransportError(f"SSH failed: {e.reason}", host=host.name, step="connect") from e
        except OSError as e:
            raise UnreachableError(
                f"cannot reach {host.address}:{host.port}: "
                f"{os.strerror(e.errno) if e.errno else e.strerror or e}",
                host=host.name, step="connect",
            ) from e

    async def connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is None:
                if self.jump is not None:
                    self._jump_conn = await self._connect_one(self.jump)
                self._conn = await self._connect_one(self.host, tunnel=self._jump_conn)
            return self._conn

    async def _exec(self, script: str) -> tuple[bytes, bytes]:
        conn = await self.connect()
        argv = ["sudo", "-n", "sh", "-c", script] if self.host.use_sudo else ["sh", "-c", script]
        async with self._channels:
            try:
                proc = await conn.create_process(shlex.join(argv), encoding=None, stdin=asyncssh.DEVNULL)
                try:
                    out = await asyncio.gather(read_capped(proc.stdout, self.max_host_output, self.name),
                                               read_capped(proc.stderr, self.max_host_output, self.name))
                finally:
                    proc.close()  # not waited for on a failure: closing the connection ends it
                await proc.wait_closed()
                return out[0], out[1]
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError) as e:
                self._conn = None
                raise ConnectionLost(f"connection dropped: {e}", host=self.name) from e
            except asyncssh.ChannelOpenError as e:
                raise TransportError(f"cannot open a channel: {e.reason}", host=self.name) from e

    async def run(self, commands: Sequence[Command], *, step: str = "") -> list[CommandResult]:
        try:
            return await _run_batch(self, commands, step)
        except TransportError as e:
            e.step = e.step or step
            raise

    async def close(self) -> None:
        for conn in (self._conn, self._jump_conn):
            if conn is not None:
                conn.close()
                await conn.wait_closed()
        self._conn = self._jump_conn = None


Connect = Callable[[Host], Transport]  # connect(host) -> a transport to it


def ssh_connect(settings: Settings, inventory: Inventory) -> Connect:
    """connect(host): an SSH transport to `host`, through its jump host when it names one
    (an inventory name, or [user@]host[:port] with the host's identity and known_hosts)."""

    def connect(host: Host) -> Transport:
        jump = None
        if host.jump:
            jump = parse_target(host.jump, inventory, host.identity_file, host.known_hosts)
        return SSHTransport(host, settings, jump=jump)

    return connect


# --- the one place where a `sh -c` script is built (fixes: backup, dead-man job) ---


@dataclass(frozen=True)
class ScriptLine:
    """One line of a script: argv plus optional redirections to fixed paths.

    Every word and every path is quoted by shlex here; the script's only
    other text is fixed syntax written by mailcheck.
    """

    argv: tuple[str, ...]
    stdin: str | None = None
    stdout: str | None = None
    append: bool = False
    check: bool = True  # False: a failure of this line does not stop the script

    def line(self) -> str:
        text = shlex.join(self.argv)
        if self.stdin is not None:
            text += f" <{shlex.quote(self.stdin)}"
        if self.stdout is not None:
            text += f" {'>>' if self.append else '>'}{shlex.quote(self.stdout)}"
        return text if self.check else f"{text} || :"


def script_command(lines: Sequence[ScriptLine], *, timeout: float = 30.0,
                   keep_going: bool = False) -> Command:
    """A Command running `lines` in order under `sh -e` (the first failure stops it).

    keep_going (restores): every line is tried, and the script exits 1 if any failed; each
    failed line prints `FAILED_LINE N` (its index in `lines`) on stderr, see failed_lines().
    """
    if keep_going:
        body = "rc=0\n" + "".join(f"{s.line()} || {{ rc=1; echo {FAILED_LINE} {i} >&2; }}\n"
                                   for i, s in enumerate(lines)) + 'exit "$rc"\n'
    else:
        body = "set -e\n" + "\n".join(s.line() for s in lines) + "\n"
    return Command(("sh", "-c", body), timeout=timeout)


FAILED_LINE = "mailcheck-failed-line"


def failed_lines(stderr: str) -> list[int]:
    """The indices a keep_going script_command said failed (its FAILED_LINE lines)."""
    return [int(w[1]) for w in (ln.split() for ln in stderr.splitlines())
            if len(w) == 2 and w[0] == FAILED_LINE and w[1].isdigit()]


GUARD_MARKERS = ("fired", "restored", "restore-failed", "cancelled", "undone")


def guard_job(lines: Sequence[ScriptLine], *, armed: str, log: str) -> str:
    """The dead-man job's script: restore unless `armed` was renamed away first.

    It runs only if it can atomically rename `armed` to `armed`.fired (whoever renames it
    first wins: `mv armed armed.cancelled` disarms it, `mv armed armed.undone` after mailcheck
    restored the backup itself). Every line is tried; only when all
    succeeded does it create `armed`.restored, otherwise `armed`.restore-failed: mailcheck
    reports exactly the marker it finds.
    """
    q = shlex.quote
    return "\n".join([
        f"exec </dev/null >>{q(log)} 2>&1",
        f"mv {q(armed)} {q(armed + '.fired')} 2>/dev/null || exit 0",
        "date -u", "rc=0",
        *(f"{s.line()} || rc=1" for s in lines),
        f'if [ "$rc" = 0 ]; then : >{q(armed + ".restored")}; echo restored; '
        f'else : >{q(armed + ".restore-failed")}; echo "restore FAILED"; fi',
    ]) + "\n"


def detached_command(lines: Sequence[ScriptLine], *, delay: int, armed: str, log: str,
                     systemd: bool = False, unit: str = "mailcheck-guard") -> Command:
    """Start the dead-man job (guard_job) on the host, to run `delay` s from now, outside
    the SSH session.

    systemd: `systemd-run --on-active=DELAY` makes it a transient timer and service of the
    system manager, so it survives the session's cgroup (logind's KillUserProcesses=yes
    kills a `setsid` job with the session). Otherwise `setsid -f`, which returns at once.
    """
    body = guard_job(lines, armed=armed, log=log)
    if systemd:
        argv = ("systemd-run", "--quiet", "--collect", f"--unit={unit}",
                f"--on-active={int(delay)}", "--timer-property=AccuracySec=1s",
                f"--description=mailcheck lock-out guard ({armed})", "/bin/sh", "-c", body)
    else:
        first, rest = body.split("\n", 1)
        argv = ("setsid", "-f", "sh", "-c", f"{first}\nsleep {int(delay)}\n{rest}")
    return Command(argv, timeout=10)
