"""A real resolver for a lab host: unbound in a namespace of its own, linked to the host.

    host mcH  mcvR 198.18.R.1/30 ──── eth0 198.18.R.2/30  [resolver mcR: unbound on :53]

The resolver namespace comes from the labhost allocator (so parallel runs do not
collide) and is linked to the host's namespace only, not to the root namespace: the
host's resolv.conf names 198.18.R.2, and nothing the resolver does can leave (it has
no other link and no default route). unbound answers from its own data (`local-zone:
"." static`: the host's names and the prober's reverse name, NXDOMAIN for anything
else, never a recursion out of the lab), with recursion offered to the lab. States a
test can put it in: `working()`, `refusing()` (access-control refuse: REFUSED to
everyone), `silent()` (the process stopped: queries are queued, never answered).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.labhost import LabHost, _allocate, _run, make_host


class LabUnbound:
    def __init__(self, ns: LabHost, host: LabHost, names: dict[str, str]) -> None:
        """`names`: extra A records (name -> address) besides the host's own."""
        self.ns, self.host, self.names = ns, host, names
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return self.ns.ip

    def _setup_link(self) -> None:
        ns, host = self.ns, self.host
        _run("ip", "link", "add", ns.veth, "type", "veth", "peer", "name", "eth0", "netns", ns.ns)
        _run("ip", "link", "set", ns.veth, "netns", host.ns)
        host.sh("ip", "addr", "add", f"{ns.outside_ip}/30", "dev", ns.veth)
        host.sh("ip", "link", "set", ns.veth, "up")
        ns.sh("ip", "addr", "add", f"{ns.ip}/30", "dev", "eth0")
        for dev in ("eth0", "lo"):
            ns.sh("ip", "link", "set", dev, "up")

    def config(self, access: str) -> str:
        h = self.host
        data = [f'local-data: "mx{h.index}.lab.test. A {h.ip}"',
                f'local-data: "lab.test. MX 10 mx{h.index}.lab.test."',
                f'local-data-ptr: "{h.outside_ip} outside.mx{h.index}.lab.test."',
                f'local-data-ptr: "{h.ip} mx{h.index}.lab.test."',
                *(f'local-data: "{n}. A {a}"' for n, a in self.names.items())]
        return "\n".join([
            "server:", f"  interface: {self.address}", "  port: 53", "  do-daemonize: no",
            '  username: ""', '  chroot: ""', f'  directory: "{self.ns.workdir}"',
            f'  pidfile: "{self.ns.workdir}/unbound.pid"', "  use-syslog: no",
            f'  logfile: "{self.ns.workdir}/unbound.log"', "  verbosity: 1",
            f"  access-control: 198.18.0.0/15 {access}", "  access-control: 0.0.0.0/0 refuse",
            '  local-zone: "." static', *(f"  {d}" for d in data), ""])

    def _start(self, access: str) -> None:
        self.stop()
        conf = self.ns.workdir / "unbound.conf"
        conf.write_text(self.config(access))
        self.proc = self.ns.popen("unbound", "-d", "-c", str(conf),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_udp(self.ns, 53)

    def working(self) -> None:
        self._start("allow")

    def refusing(self) -> None:
        self._start("refuse")

    def silent(self) -> None:
        """Stop the process: the kernel still takes the queries, nothing answers them."""
        if self.proc is None:
            self.working()
        os.kill(self.proc.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)  # also ends a stopped one
            self.proc.wait(timeout=5)
            self.proc = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.ns.close()


def _wait_udp(ns: LabHost, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in ns.sh("ss", "-Hlun").stdout:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{ns.ns}: nothing listens on udp/{port}")


def make_host_with_unbound(client_key: Path, names: dict[str, str] | None = None,
                           **host_kw) -> tuple[LabHost, LabUnbound]:
    """A lab host (sshd running) whose resolv.conf names a working unbound of its own."""
    index = _allocate()
    ns = LabHost(index=index, workdir=Path(tempfile.mkdtemp(prefix=f"mclab{index}-")),
                 client_key=client_key)
    host = None
    try:
        host = make_host(client_key, resolver=ns.ip, **host_kw)
        resolver = LabUnbound(ns, host, names or {})
        resolver._setup_link()
        resolver.working()
    except BaseException:
        if host is not None:
            host.close()
        ns.close()
        raise
    return host, resolver
