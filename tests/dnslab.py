"""A real DNS lab in a network namespace of its own (see ../shared/LAB.md, "A DNS lab").

    knotd      authoritative for every zone of the test's world, DNSSEC-signing
               the zones marked signed (keys kept for the session, so each
               zone's trust anchor stays the same)
    rbldnsd    the world's DNSBL zones (ip4set and ip6trie data)
    unbound    validating resolver on RESOLVER (198.18.N.53:53): a stub per zone,
               a trust anchor per signed zone, so signed answers carry AD
    rewriter   a resolver on REWRITER (198.18.N.54:53) that forwards to unbound
               and turns NXDOMAIN into an A answer 127.0.0.2 (an ISP's ad page,
               at its worst): DNSBL zones through it list everything
    https      HTTPS on WEB (198.18.N.80:443) serving files per Host
               (MTA-STS policies, RDAP answers) with certificates signed by the
               lab CA (ca.pem), minted per SNI name

N comes from the lab hosts' allocator (namespace mcN, 198.18.N.0/24 routed to
it from the root namespace). No query leaves the machine: every zone the
resolver answers for is a stub to this namespace, and it has no root hints it
could reach (the namespace has no route but to the root namespace's veth end).

`DnsLab.load(zones, dnsbl, files)` replaces the whole world: knot reloads its
configuration and zones (keys kept), rbldnsd its data (restarted only when
the set of DNSBL zones changes), unbound its configuration with the new trust
anchors and an empty cache. A test builds the world it needs in ~0.15 s.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename

from tests.labhost import SBIN_PATH, LabHost, _allocate, _run, no_forwarding, require_declared

PROGRAMS = ("ip", "knotd", "knotc", "unbound", "unbound-control", "rbldnsd")  # all in labhost.REQUIRED
HERE = Path(__file__).parent
KNOT_PORT, RBL_PORT = 5300, 5301
# RFC 5782 section 5: every IPv4 DNSBL lists 127.0.0.2 and not 127.0.0.1;
# the IPv6 test entries are ::FFFF:7F00:2 and ::FFFF:7F00:1.
TEST_ENTRIES = {"127.0.0.2": ("127.0.0.2", "RFC 5782 test entry"),
                "::ffff:7f00:2": ("127.0.0.2", "RFC 5782 test entry")}


EVERYTHING = ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")


def standard_dnsbl(listed: dict[str, tuple[str, str]] | None = None) -> dict[str, dict[str, tuple[str, str]]]:
    """The lab's DNSBL zones: bl.test, a real-style list (RFC 5782 test entries, plus
    `listed` {address: (code, TXT)}), and blocked.test, which answers 127.255.255.254 for
    everything, as Spamhaus answers a public resolver ("cannot check")."""
    return {"bl.test": {**TEST_ENTRIES, **(listed or {})},
            "blocked.test": {net: ("127.255.255.254", "query refused: public resolver") for net in EVERYTHING}}


@dataclass(frozen=True)
class Zone:
    """One zone of the world: zone-file lines ($ORIGIN is the zone; SOA/NS added)."""

    name: str
    body: str
    signed: bool = True
    ns: tuple[str, ...] = ("ns1.dns-provider.test.", "ns2.dns-provider.test.")

    def text(self, serial: int) -> str:
        head = [f"$ORIGIN {self.name}.", "$TTL 300",
                f"@ SOA {self.ns[0]} hostmaster.{self.name}. {serial} 300 300 3600 60"]
        head += [f"@ NS {n}" for n in self.ns]
        return "\n".join(head) + "\n" + self.body.strip() + "\n"


def missing_prerequisites() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root (network namespaces need it)"]
    return missing + [p for p in PROGRAMS if not shutil.which(p, path=SBIN_PATH)]


def reverse_zone(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) reverse zone holding an address's PTR."""
    name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    return name.split(".", 1)[1] if ":" not in address else name.split(".", 16)[16]


class DnsLab:
    def __init__(self) -> None:
        self.index = _allocate()
        self.ns = f"mc{self.index}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"dnslab{self.index}-"))
        self.ca_file = self.dir / "ca.pem"
        self.resolver, self.rewriter = self.ip(53), self.ip(54)
        self.authoritative = self.ip(55)  # knot (port 5300), rbldnsd (5301); also on 127.0.0.1
        self.web = self.ip(80)
        self.procs: dict[str, subprocess.Popen] = {}
        self.zones: list[Zone] = []
        self.serial = 0
        self._anchors: dict[str, list[str]] = {}

    def ip(self, last: int) -> str:
        return f"198.18.{self.index}.{last}"

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> DnsLab:
        try:
            self._network()
            self._make_ca()
            (self.dir / "db").mkdir()
            (self.dir / "www").mkdir()
            py = str(Path(sys.executable).with_name("python3"))  # this venv's, with dnspython
            self._spawn(py, str(HERE / "dnslab_servers.py"), "rewriter",
                        self.rewriter, self.resolver, "127.0.0.2", name="rewriter")
            self._spawn(py, str(HERE / "dnslab_servers.py"), "https", self.web,
                        str(self.dir / "www"), str(self.ca_file), str(self.dir / "ca.key"),
                        str(self.dir / "certs"), name="https")
            self.load([])
        except BaseException:
            self.close()
            raise
        return self

    def _sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.ns, *argv, check=check)

    def _network(self) -> None:
        veth = f"mcv{self.index}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        _run("ip", "addr", "add", f"{self.ip(1)}/30", "dev", veth)
        _run("ip", "link", "set", veth, "up")
        no_forwarding(veth)
        self._sh("ip", "addr", "add", f"{self.ip(2)}/30", "dev", "eth0")
        for last in (53, 54, 55, 80):
            self._sh("ip", "addr", "add", f"{self.ip(last)}/32", "dev", "lo")
        self._sh("ip", "link", "set", "eth0", "up")
        self._sh("ip", "link", "set", "lo", "up")
        _run("ip", "route", "add", f"198.18.{self.index}.0/24", "via", self.ip(2), "dev", veth)

    def _make_ca(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mailcheck DNS lab CA {self.index}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.dir / "ca.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def _spawn(self, *argv: str, name: str) -> None:
        require_declared(argv)
        log = open(self.dir / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for name in list(self.procs):
            self._stop(name)
        out = _run("ip", "netns", "pids", self.ns, check=False).stdout
        for pid in out.split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "link", "del", f"mcv{self.index}", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        _run("ip", "netns", "del", self.ns, check=False)

    # --- the world ---------------------------------------------------------------
    def load(self, zones: list[Zone], dnsbl: dict[str, dict[str, tuple[str, str]]] | None = None,
             files: dict[str, str] | None = None) -> None:
        """Serve exactly this world: zones, DNSBL zones {zone: {net: (answer, text)}}, and
        HTTPS files {"host/path": text}."""
        self.serial += 1
        self.zones = list(zones)
        self._write_files(files or {})
        self._start_knot()
        self._start_rbldnsd(dnsbl or {})
        self._write_unbound(dnsbl or {})

    def _write_files(self, files: dict[str, str]) -> None:
        www = self.dir / "www"
        shutil.rmtree(www)
        www.mkdir()
        for where, text in files.items():
            path = www / where.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _start_knot(self) -> None:
        """Write the zones and knot.conf; start knot, or have it reload (new, changed and
        removed zones; keys stay in its database, so trust anchors stay the same)."""
        zdir = self.dir / "zones"
        zdir.mkdir(exist_ok=True)
        for old in zdir.glob("*.zone"):
            old.unlink()
        lines = ["server:", f"  listen: [ 127.0.0.1@{KNOT_PORT}, {self.authoritative}@{KNOT_PORT} ]",
                 f"  rundir: {self.dir}",
                 "control:", f"  listen: {self.dir / 'knot.sock'}",
                 "database:", f"  storage: {self.dir / 'db'}",
                 "template:"]
        for tid, signed in (("default", "on"), ("unsigned", "off")):
            lines += [f"  - id: {tid}", f"    storage: {zdir}", '    file: "%s.zone"',
                      f"    dnssec-signing: {signed}", "    journal-content: none",
                      "    zonefile-sync: -1", "    zonefile-load: whole"]
        lines.append("zone:" if self.zones else "")
        for z in self.zones:
            (zdir / f"{z.name}.zone").write_text(z.text(self.serial))
            lines.append(f"  - domain: {z.name}" + ("" if z.signed else "\n    template: unsigned"))
        conf = self.dir / "knot.conf"
        conf.write_text("\n".join(lines) + "\n")
        if "knot" in self.procs:
            _run("knotc", "-c", str(conf), "-s", str(self.dir / "knot.sock"), "reload")
        else:
            self._spawn("knotd", "-c", str(conf), name="knot")
        for z in self.zones:
            self._wait_zone(z)

    def _wait_zone(self, zone: Zone, timeout: float = 10.0) -> None:
        """Until knot serves the zone (signed zones: with their DNSKEY); notes the KSK."""
        deadline = time.monotonic() + timeout
        rdtype = dns.rdatatype.DNSKEY if zone.signed else dns.rdatatype.SOA
        while time.monotonic() < deadline:
            if self.procs["knot"].poll() is not None:
                raise RuntimeError(f"knotd exited: {(self.dir / 'knot.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError, dns.exception.DNSException):
                q = dns.message.make_query(zone.name, rdtype)
                r = self._ask(q, KNOT_PORT)
                soa = self._ask(dns.message.make_query(zone.name, "SOA"), KNOT_PORT)
                fresh = soa.answer and soa.answer[0][0].serial >= self.serial
                if r.rcode() == dns.rcode.NOERROR and r.answer and fresh:
                    if zone.signed:
                        self._anchors[zone.name] = [
                            f'  trust-anchor: "{zone.name}. DNSKEY {k.to_text()}"'
                            for k in r.answer[0] if k.flags == 257]
                    return
            time.sleep(0.02)
        raise TimeoutError(f"knot does not serve {zone.name}: {(self.dir / 'knot.log').read_text()[-2000:]}")

    def _ask(self, query: dns.message.Message, port: int) -> dns.message.Message:
        """A query to knot or rbldnsd, straight to the lab address they listen on."""
        return dns.query.udp(query, self.authoritative, port=port, timeout=0.5)

    def _start_rbldnsd(self, dnsbl: dict[str, dict[str, tuple[str, str]]]) -> None:
        """Write the DNSBL data; the same zones as before: rbldnsd reloads it (SIGHUP),
        other zones: a new rbldnsd."""
        rdir = self.dir / "rbl"
        rdir.mkdir(exist_ok=True)
        specs = []
        for zone, entries in dnsbl.items():
            for kind, six in (("ip4set", False), ("ip6trie", True)):
                lines = [f"$SOA 60 ns1.{zone}. hostmaster.{zone}. {self.serial} 60 60 600 60",
                         f"$NS 60 ns1.{zone}."]
                lines += [f"{net} :{answer}:{text}" for net, (answer, text) in entries.items()
                          if (":" in net) == six]
                data = rdir / f"{zone}.{kind}"
                data.write_text("\n".join(lines) + "\n")
                stamp = int(time.time()) + self.serial  # rbldnsd reloads a file whose mtime (s) changed
                os.utime(data, (stamp, stamp))
                specs.append(f"{zone}:{kind}:{zone}.{kind}")
        running = self.procs.get("rbldnsd")
        if running and running.poll() is None and running.args[-len(specs):] == specs and specs:
            running.send_signal(signal.SIGHUP)
        else:
            self._stop("rbldnsd")
            if specs:
                self._spawn("rbldnsd", "-n", "-e", "-w", str(rdir), "-b", f"127.0.0.1/{RBL_PORT}",
                            "-b", f"{self.authoritative}/{RBL_PORT}", *specs, name="rbldnsd")
        if specs:
            self._wait_rbl(next(iter(dnsbl)))

    def _wait_rbl(self, zone: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, dns.exception.DNSException):
                r = self._ask(dns.message.make_query(zone, "SOA"), RBL_PORT)
                if r.answer and r.answer[0][0].serial == self.serial:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"rbldnsd does not serve {zone}: {(self.dir / 'rbldnsd.log').read_text()}")

    def _write_unbound(self, dnsbl: dict) -> None:
        conf = self.dir / "unbound.conf"
        lines = ["server:", f"  interface: {self.resolver}", "  port: 53", "  do-not-query-localhost: no",
                 '  username: ""', '  chroot: ""', f'  directory: "{self.dir}"',
                 f'  pidfile: "{self.dir}/unbound.pid"', f'  logfile: "{self.dir}/unbound.log"',
                 "  use-syslog: no", "  verbosity: 1", "  val-log-level: 2",
                 '  module-config: "validator iterator"', "  access-control: 0.0.0.0/0 allow",
                 "  cache-max-negative-ttl: 1", "  num-threads: 1",
                 '  domain-insecure: "test."', '  domain-insecure: "in-addr.arpa."',
                 '  domain-insecure: "ip6.arpa."',
                 '  local-zone: "test." nodefault', '  local-zone: "18.198.in-addr.arpa." nodefault',
                 '  local-zone: "19.198.in-addr.arpa." nodefault']
        lines += [a for z in self.zones if z.signed for a in self._anchors[z.name]]
        lines += ["remote-control:", "  control-enable: yes",
                  f'  control-interface: "{self.dir}/unbound.ctl"', "  control-use-cert: no"]
        for z in self.zones:
            lines += ["stub-zone:", f'  name: "{z.name}."', f"  stub-addr: 127.0.0.1@{KNOT_PORT}"]
        for zone in dnsbl:
            lines += ["stub-zone:", f'  name: "{zone}."', f"  stub-addr: 127.0.0.1@{RBL_PORT}"]
        conf.write_text("\n".join(lines) + "\n")
        if "unbound" not in self.procs:
            self._spawn("unbound", "-d", "-c", str(conf), name="unbound")
        else:
            self._sh("unbound-control", "-c", str(conf), "reload")
        self._wait_resolver()

    def _wait_resolver(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        q = dns.message.make_query("invalid.", "SOA")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, dns.exception.DNSException):
                dns.query.udp(q, self.resolver, timeout=0.5)
                return
            time.sleep(0.02)
        raise TimeoutError(f"unbound does not answer: {(self.dir / 'unbound.log').read_text()[-2000:]}")

    def routes_out(self) -> list[str]:
        """Routes of the lab namespace beyond its own link (there must be none)."""
        out = self._sh("ip", "-4", "route", "show").stdout.splitlines()
        out += self._sh("ip", "-6", "route", "show").stdout.splitlines()
        return [r for r in out if r.startswith("default") or " via " in r]

    # --- lab hosts -----------------------------------------------------------------
    def attach(self, host: LabHost) -> None:
        """Link a lab host made with make_host(resolver=dnslab.resolver) to the DNS namespace,
        so that the resolver its resolv.conf names (labhost writes it) is reachable. The link
        goes with the host (its namespace) when it closes."""
        if host.resolver != self.resolver:
            raise ValueError(f"{host.ns} was made with resolver={host.resolver!r}; "
                             f"make it with resolver={self.resolver!r} to attach it")
        veth = f"mcr{host.index}"
        a, b = f"198.18.{host.index}.5", f"198.18.{host.index}.6"
        _run("ip", "link", "add", veth, "netns", self.ns, "type", "veth", "peer", "name", "dns0",
             "netns", host.ns)
        self._sh("ip", "addr", "add", f"{a}/30", "dev", veth)
        self._sh("ip", "link", "set", veth, "up")
        host.sh("ip", "addr", "add", f"{b}/30", "dev", "dns0")
        host.sh("ip", "link", "set", "dns0", "up")
        host.sh("ip", "route", "add", f"198.18.{self.index}.0/24", "via", a)
