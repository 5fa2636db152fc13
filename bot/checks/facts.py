"""Host facts every step reads: distro family, addresses, whether systemd runs.

Read in the engine's first (tiny) batch, so the IPv6 probes can start while
the rest of the commands run. The same round trip reads the host's resolver
configuration and node name, so the resolver step can ask each nameserver in the
main round trip instead of a third one.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.models import Command, CommandResult

OS_RELEASE = ("cat", "/etc/os-release")
IP_ADDR = ("ip", "-o", "addr", "show")
PID1 = ("cat", "/proc/1/comm")
RESOLV = ("cat", "/etc/resolv.conf")
RESOLVED = ("cat", "/run/systemd/resolve/resolv.conf")  # systemd-resolved's upstreams
UNAME = ("uname", "-n")

DEBIAN_IDS = {"debian", "ubuntu", "raspbian", "linuxmint", "devuan"}
RHEL_IDS = {"rhel", "centos", "rocky", "almalinux", "fedora", "ol", "cloudlinux", "amzn"}


@dataclass(frozen=True)
class Address:
    iface: str
    address: str
    scope: str  # global | host | link

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.address else "ipv4"

    @property
    def is_global(self) -> bool:
        if self.scope != "global":
            return False
        ip = ipaddress.ip_address(self.address)
        return not (ip.is_loopback or ip.is_link_local)


@dataclass(frozen=True)
class HostFacts:
    distro_id: str = "unknown"
    distro_family: str = "unknown"  # debian | rhel | unknown
    pretty_name: str = ""
    systemd: bool | None = None  # None: could not tell
    addresses: tuple[Address, ...] = field(default_factory=tuple)

    def global_address(self, family: str) -> str | None:
        return next((a.address for a in self.addresses if a.family == family and a.is_global), None)

    def iface_of(self, address: str | None) -> str | None:
        return next((a.iface for a in self.addresses if a.address == address), None)


def commands() -> list[Command]:
    return [Command(argv, timeout=5) for argv in (OS_RELEASE, IP_ADDR, PID1, RESOLV, RESOLVED, UNAME)]


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value.strip('"')]
            out[key.strip()] = words[0] if words else ""
    return out


def distro_family(info: Mapping[str, str]) -> str:
    ids = {info.get("ID", "").lower(), *info.get("ID_LIKE", "").lower().split()}
    if ids & DEBIAN_IDS:
        return "debian"
    if ids & RHEL_IDS:
        return "rhel"
    return "unknown"


def parse_ip_addr(text: str) -> tuple[Address, ...]:
    """`ip -o addr show`: '2: eth0    inet 198.18.1.2/30 brd ... scope global eth0 ...'."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4 or words[2] not in ("inet", "inet6"):
            continue
        scope = words[words.index("scope") + 1] if "scope" in words[:-1] else "global"
        out.append(Address(words[1].rstrip(":").split("@")[0], words[3].split("/")[0], scope))
    return tuple(out)


def read_facts(results: Mapping[tuple[str, ...], CommandResult]) -> HostFacts:
    osr = results.get(OS_RELEASE)
    info = parse_os_release(osr.stdout) if osr is not None and osr.ok else {}
    addr = results.get(IP_ADDR)
    pid1 = results.get(PID1)
    systemd = pid1.stdout.strip() == "systemd" if pid1 is not None and pid1.ok else None
    return HostFacts(
        distro_id=info.get("ID", "unknown").lower() or "unknown",
        distro_family=distro_family(info),
        pretty_name=info.get("PRETTY_NAME", ""),
        systemd=systemd,
        addresses=parse_ip_addr(addr.stdout) if addr is not None and addr.ok else (),
    )
