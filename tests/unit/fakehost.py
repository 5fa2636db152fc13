"""A fake host for fix tests: a Transport that records every command with real times.

Not a mock: it has behaviour (answers per argv, optional failures, a delay
per command) and a journal of (start, end, transport id, argv) taken with
time.monotonic, so tests can prove ordering and exclusion.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.errors import ConnectionLost, UnreachableError
from bot.models import Command, CommandResult

_ids = itertools.count(1)


@dataclass
class FakeHost:
    delay: float = 0.0
    answers: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)
    fail: set[tuple[str, ...]] = field(default_factory=set)
    fail_if: list[str] = field(default_factory=list)  # a command whose words contain one fails
    journal: list[tuple[float, float, int, tuple[str, ...]]] = field(default_factory=list)
    connections: int = 0
    unreachable: bool = False  # every run raises UnreachableError (host down)
    answers_if: dict[str, tuple[int, str]] = field(default_factory=dict)  # a word in the argv -> answer
    cut_at: str | None = None  # a command containing this word drops the connection (once) and
    # the host stays unreachable until .unreachable is set False again
    on_run: Callable[[tuple[str, ...]], None] | None = None  # called before each command runs
    fail_when: Callable[[tuple[str, ...]], bool] | None = None  # such a command exits 1
    seen: list[Command] = field(default_factory=list)  # every command, with its timeout and env

    def connect(self, host) -> FakeTransport:
        self.connections += 1
        return FakeTransport(self, host.name)

    def ran(self, word: str) -> list[tuple[float, float, int, tuple[str, ...]]]:
        return [j for j in self.journal if any(word in a for a in j[3])]


class FakeTransport:
    def __init__(self, host: FakeHost, name: str) -> None:
        self.host, self.name, self.id = host, name, next(_ids)

    async def run(self, commands: Sequence[Command], *, step: str = "") -> list[CommandResult]:
        if self.host.unreachable:
            raise UnreachableError("no SSH answer", host=self.name, step=step)
        out = []
        for cmd in commands:
            start = time.monotonic()
            await asyncio.sleep(self.host.delay)
            self.host.seen.append(cmd)
            if self.host.on_run is not None:
                self.host.on_run(cmd.argv)
            if self.host.cut_at is not None and any(self.host.cut_at in a for a in cmd.argv):
                self.host.cut_at, self.host.unreachable = None, True
                self.host.journal.append((start, time.monotonic(), self.id, cmd.argv))
                raise ConnectionLost("connection dropped", host=self.name, step=step)
            rc, stdout = self.host.answers.get(cmd.argv, (0, ""))
            for word, answer in self.host.answers_if.items():
                if any(word in a for a in cmd.argv):
                    rc, stdout = answer
                    break
            if cmd.argv in self.host.fail or any(w in a for w in self.host.fail_if for a in cmd.argv) \
                    or (self.host.fail_when is not None and self.host.fail_when(cmd.argv)):
                rc, stdout = 1, ""
            self.host.journal.append((start, time.monotonic(), self.id, cmd.argv))
            out.append(CommandResult(cmd, rc, stdout, "boom" if rc else ""))
        return out

    async def close(self) -> None:
        return None
