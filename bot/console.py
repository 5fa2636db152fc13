"""The person at the terminal: what every `mailcheck` subcommand handler is given.

The wiring (engine, store, fix service, connect), how to ask a question, where to
print, and who is asking: Actor("cli", login), the holder of the SSH key.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from bot.models import Actor
from bot.wiring import Wiring


@dataclass
class Console:
    wiring: Wiring
    ask: Callable[[str], str] = input
    out: TextIO = field(default_factory=lambda: sys.stdout)
    actor: Actor = field(default_factory=lambda: Actor("cli", getpass.getuser()))

    def say(self, text: str = "") -> None:
        print(text, file=self.out)
