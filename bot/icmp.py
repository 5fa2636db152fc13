"""What the kernel was told when a connect failed: the socket error queue.

With IP_RECVERR / IPV6_RECVERR set on a socket, Linux queues every ICMP error
it receives for that socket, with the ICMP type and code and the address that
sent it (`struct sock_extended_err`, see ip(7) and ipv6(7)). A connect that
fails with no queued ICMP error was answered by a TCP RST; one with a queued
error was answered by an ICMP message, and the queue says by whom.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from bot.models import Family

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # <linux/in.h>; Python 3.11 lacks the names
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)  # <linux/in6.h>
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data

# The names iptables' --reject-with and nft's `reject with` use (without the icmp- prefix).
UNREACH_V4 = {0: "net-unreachable", 1: "host-unreachable", 2: "proto-unreachable",
              3: "port-unreachable", 4: "frag-needed", 5: "source-route-failed",
              6: "net-unknown", 7: "host-unknown", 9: "net-prohibited", 10: "host-prohibited",
              11: "net-unreachable-for-tos", 12: "host-unreachable-for-tos",
              13: "admin-prohibited", 14: "host-precedence-violation", 15: "precedence-cutoff"}
UNREACH_V6 = {0: "no-route", 1: "admin-prohibited", 2: "beyond-scope", 3: "addr-unreachable",
              4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}
DEST_UNREACH = {"ipv4": 3, "ipv6": 1}
TIME_EXCEEDED = {"ipv4": 11, "ipv6": 3}


@dataclass(frozen=True)
class IcmpError:
    """One ICMP error the kernel queued for a socket."""

    family: Family
    type: int
    code: int
    sender: str | None  # the offender: who sent the ICMP message (None if the kernel did not say)
    errno: int = 0

    @property
    def unreachable(self) -> bool:
        """Destination unreachable (a reject, a missing route, an unanswered neighbour)."""
        return self.type == DEST_UNREACH[self.family]

    @property
    def name(self) -> str:
        if self.unreachable:
            table = UNREACH_V4 if self.family == "ipv4" else UNREACH_V6
            return table.get(self.code, f"unreachable-code-{self.code}")
        if self.type == TIME_EXCEEDED[self.family]:
            return "time-exceeded"
        return f"icmp-type-{self.type}-code-{self.code}"

    def describe(self) -> str:
        """'ICMP host-prohibited (type 3 code 10) from 198.18.2.2'."""
        kind = "ICMPv6" if self.family == "ipv6" else "ICMP"
        return (f"{kind} {self.name} (type {self.type} code {self.code}) "
                f"from {self.sender or 'an unnamed sender'}")


def enable(sock: socket.socket) -> None:
    """Ask the kernel to queue ICMP errors for this socket."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def parse(level: int, kind: int, data: bytes) -> IcmpError | None:
    """One control message from recvmsg(MSG_ERRQUEUE) -> the ICMP error, or None if it is not one.

    `data` is a struct sock_extended_err followed by the offender's sockaddr (SO_EE_OFFENDER).
    """
    if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
        return None
    if len(data) < _EE.size:
        return None
    errno, origin, icmp_type, code, _pad, _info, _data = _EE.unpack_from(data)
    if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
        return None
    family: Family = "ipv6" if origin == SO_EE_ORIGIN_ICMP6 else "ipv4"
    return IcmpError(family, icmp_type, code, _offender(data[_EE.size:]), errno)


def _offender(raw: bytes) -> str | None:
    """The address in a sockaddr_in / sockaddr_in6 (native-endian sa_family first)."""
    if len(raw) < 2:
        return None
    (af,) = struct.unpack_from("=H", raw)
    if af == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if af == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def read_error_queue(sock: socket.socket) -> IcmpError | None:
    """The last ICMP error queued for the socket (draining the queue), or None."""
    found = None
    for _ in range(16):  # a connect gets one error per SYN sent; never loop forever
        try:
            _msg, ancdata, _flags, _addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: the queue is empty
            break
        for level, kind, data in ancdata:
            found = parse(level, kind, data) or found
    return found
