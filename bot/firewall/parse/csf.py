"""ConfigServer Firewall (CSF): is it in charge, and what does its csf.conf say.

`csf -v` names the version ("csf: v15.03 (generic)"), warns of TESTING mode, and says when
csf was disabled (`csf -x`: "csf and lfd have been disabled"). /etc/csf/csf.conf holds the
settings CSF builds its iptables chains from at every `csf -r` (TCP_IN, TCP_OUT, TCP6_IN,
TCP6_OUT, IPV6, TESTING, DOCKER...): KEY = "VALUE" lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.firewall.parse import Results, ok_output

CSF_CONF_PATH = "/etc/csf/csf.conf"
CSF_VERSION = ("csf", "-v")
CSF_CONF = ("cat", CSF_CONF_PATH)
_OPTION = re.compile(r'^([A-Z0-9_]+)\s*=\s*"([^"\n]*)"[ \t]*$', re.M)
PORT_LIST = re.compile(r"^[0-9:,]*$")  # TCP_IN & co. as mailcheck will edit them: ports and ranges


@dataclass(frozen=True)
class CsfStatus:
    version: str | None = None  # csf -v's first line; None: no csf on this host
    conf: str | None = None  # csf.conf as read
    disabled: bool = False  # `csf -x`
    options: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.version is not None and self.conf is not None and not self.disabled

    def flag(self, key: str) -> bool:
        return self.options.get(key, "0").strip() not in ("", "0")

    def ports(self, key: str) -> set[int] | None:
        """The ports a TCP_IN-like option opens; None when it is not a plain port list."""
        value = self.options.get(key)
        if value is None or not PORT_LIST.match(value):
            return None
        out: set[int] = set()
        for item in filter(None, value.split(",")):
            lo, _, hi = item.partition(":")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                return None
            out |= set(range(int(lo), int(hi or lo) + 1))
        return out


def parse_options(conf: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _OPTION.finditer(conf)}


def status_from_results(results: Results) -> CsfStatus:
    version_text = ok_output(results, CSF_VERSION)
    conf = ok_output(results, CSF_CONF)
    if version_text is None:
        return CsfStatus()
    lines = version_text.splitlines()
    version = next((line for line in lines if line.startswith("csf: v")), None)
    disabled = any("have been disabled" in line for line in lines)
    return CsfStatus(version, conf, disabled, parse_options(conf) if conf is not None else {})
