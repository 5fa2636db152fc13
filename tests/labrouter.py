"""A lab host behind a router: root namespace ("outside") -> router -> host.

    root  198.18.R.1/30 (mcvR) ── 198.18.R.2/30 eth0 [router mcR] mcvH 198.18.H.1/30 ── eth0 198.18.H.2/30 [host mcH]
          2001:2:0:R::1/64            2001:2:0:R::2/64      2001:2:0:H::1/64              2001:2:0:H::2/64

Both indexes come from the labhost allocator (`ip netns add` is atomic), so
parallel runs do not collide; only these lab addresses are used. Forwarding
is switched on inside the router's namespace only. The root namespace gets
one route per family to the host's subnet (via the router), which goes away
with the router's veth; the host gets one route back to the root's link
(no default route: nothing it sends can leave the lab).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.labdns import LabResolver
from tests.labhost import LabHost, _allocate, _run


def make_router(client_key: Path) -> LabHost:
    """A lab namespace linked to the root namespace like any lab host (its address there is
    the sender of its ICMP errors), with no sshd and forwarding on inside it."""
    index = _allocate()
    router = LabHost(index=index, workdir=Path(tempfile.mkdtemp(prefix=f"mclab{index}-")),
                     client_key=client_key)
    try:
        router._setup_network()
        router.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        router.sh("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
    except BaseException:
        router.close()
        raise
    return router


@dataclass
class RoutedHost(LabHost):
    """A LabHost whose link leads to a router namespace instead of the root namespace.

    Its resolv.conf names a LabResolver on the router's outside end (198.18.R.1, in the
    root namespace, reached through the router): its own, or, for a second host on the same
    router, the first one's."""

    router: LabHost | None = None
    owns_router: bool = True  # False: another host made the router and closes it

    def _setup_resolver(self) -> None:
        if self.owns_router:  # a second host on the router asks the first one's resolver
            self.dns = LabResolver(self.router.outside_ip, self.lab_names()).start()
        (self.etc / "resolv.conf").write_text(
            f"# lab host {self.ns}: its lookups go to a resolver in the lab\n"
            f"nameserver {self.router.outside_ip}\noptions timeout:1 attempts:1\n")

    def _setup_network(self) -> None:
        r = self.router
        r.sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        r.sh("ip", "addr", "add", f"{self.outside_ip}/30", "dev", self.veth)
        r.sh("ip", "-6", "addr", "add", f"{self.outside_ip6}/64", "dev", self.veth, "nodad")
        r.sh("ip", "link", "set", self.veth, "up")
        self.sh("ip", "addr", "add", f"{self.ip}/30", "dev", "eth0")
        self.sh("ip", "-6", "addr", "add", f"{self.ip6}/64", "dev", "eth0", "nodad")
        for dev in ("eth0", "lo"):
            self.sh("ip", "link", "set", dev, "up")
        self.sh("ip", "route", "add", f"198.18.{r.index}.0/30", "via", self.outside_ip)
        self.sh("ip", "-6", "route", "add", f"2001:2:0:{r.index:x}::/64", "via", self.outside_ip6)
        _run("ip", "route", "add", f"198.18.{self.index}.0/30", "via", r.ip, "dev", r.veth)
        _run("ip", "-6", "route", "add", f"2001:2:0:{self.index:x}::/64", "via", r.ip6, "dev", r.veth)

    def route_to(self, other: RoutedHost) -> None:
        """Routes between this host and `other`, another host on the same router."""
        for a, b in ((self, other), (other, self)):
            a.sh("ip", "route", "add", f"198.18.{b.index}.0/30", "via", a.outside_ip)
            a.sh("ip", "-6", "route", "add", f"2001:2:0:{b.index:x}::/64", "via", a.outside_ip6)

    def close(self) -> None:
        super().close()
        if self.router is not None and self.owns_router:
            self.router.close()


def make_routed_host(client_key: Path, router: LabHost | None = None) -> RoutedHost:
    """A lab host (sshd running) reached through a router namespace: a new one, or `router`
    (another RoutedHost's, which stays that host's to close). Call .close()."""
    owns = router is None
    router = make_router(client_key) if router is None else router
    host = None
    try:
        index = _allocate()
        host = RoutedHost(index=index, workdir=Path(tempfile.mkdtemp(prefix=f"mclab{index}-")),
                          client_key=client_key, router=router, owns_router=owns)
        host._setup_network()
        _wait_reachable(host)
        host._setup_etc()
        host._setup_resolver()
        host._setup_sshd()
    except BaseException:
        if host is not None:
            host.close()
        elif owns:
            router.close()
        raise
    return host


def _wait_reachable(host: RoutedHost, timeout: float = 5.0) -> None:
    """IPv6 neighbour discovery on fresh links takes a moment; wait until the host answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.probe(22, timeout=0.5) == "refused" and host.probe(22, six=True, timeout=0.5) == "refused":
            return
        time.sleep(0.1)
    raise TimeoutError(f"{host.ns}: not reachable through router {host.router.ns}")
