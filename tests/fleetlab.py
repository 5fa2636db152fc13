"""A fleet of lab hosts (tests/labhost.py), built in parallel, for the fleet lab test and
bench/fleet.py.

Each host is a LabHost (its own namespace, sshd, lab resolver) in one of a few states:
its firewall open, the guide's case 1 (DROP rules) or case 2 (policy DROP, only SSH), ufw
(deny incoming, SSH allowed) or nftables (an inet table dropping the mail ports); Exim
public (and Dovecot), Exim on loopback only, or no mail daemon; a dead host (its sshd
stopped: SSH is refused); a slow host (its firewall listing, iptables-save, takes
`slow` seconds, or what set_slow() says later: a wrapper earlier on sshd's PATH).
`Fleet.inventory(path)` writes the inventory mailcheck reads (group `fleet`, a tag per
state), `Fleet.close()` removes all. `dns_world(fleet, dnslab)` serves the fleet's names in
a DNS lab (tests/dnslab.py) and gives the MAILCHECK_* settings that point mailcheck at it,
so that the DNS step's answers come from the lab, the same on every run.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dns.reversename
import yaml

from tests.dnslab import DnsLab, Zone, standard_dnsbl
from tests.lab.dnsworld import world
from tests.labhost import SBIN_PATH, LabHost, make_host

MAIL_PORTS = "25,465,587,143,993"


@dataclass(frozen=True)
class Kind:
    firewall: str = "open"  # open | guide1 | guide2 | ufw | nft
    mail: str = "none"  # none | exim | exim+dovecot | exim-loopback
    dead: bool = False
    slow: float = 0.0  # seconds iptables-save takes on this host

    @property
    def tags(self) -> list[str]:
        return [self.firewall, self.mail] + (["dead"] if self.dead else []) + (["slow"] if self.slow else [])


def small_fleet(slow: float) -> list[Kind]:
    """Six hosts: mail flows, three firewalls that block it, a dead one and a slow one."""
    return [Kind("open", "exim+dovecot"), Kind("guide1", "exim+dovecot"), Kind("ufw", "exim+dovecot"),
            Kind("nft", "exim+dovecot"), Kind("open", "exim+dovecot", dead=True),
            Kind("open", "exim+dovecot", slow=slow)]


def large_fleet(n: int, slow: float) -> list[Kind]:
    """The six of small_fleet, then n - 6 more: every firewall state in turn, Exim and
    Dovecot on every eighth, Exim on loopback only on every eighth, no mail daemon on the rest."""
    firewalls = ("open", "guide1", "guide2", "ufw", "nft")
    mail = {0: "exim+dovecot", 4: "exim-loopback"}
    return small_fleet(slow) + [Kind(firewalls[i % 5], mail.get(i % 8, "none")) for i in range(n - 6)]


@dataclass
class Fleet:
    key: Path
    hosts: list[tuple[LabHost, Kind]] = field(default_factory=list)
    build_seconds: float = 0.0

    def name(self, lab: LabHost) -> str:
        return f"mx{lab.index}"

    def inventory(self, path: Path) -> Path:
        data = {"hosts": {self.name(lab): {"address": lab.ip, "identity_file": str(self.key),
                                           "known_hosts": str(lab.known_hosts), "tags": kind.tags}
                          for lab, kind in self.hosts},
                "groups": {"fleet": [self.name(lab) for lab, _ in self.hosts]}}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def known_hosts(self, path: Path) -> Path:
        """Every host's key in one file (for ssh and Ansible)."""
        path.write_text("".join(lab.known_hosts.read_text() for lab, _ in self.hosts))
        return path

    def close(self, workers: int = 8) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda hk: hk[0].close(), self.hosts))
        self.hosts.clear()


def build_fleet(key: Path, kinds: list[Kind], workers: int = 8) -> Fleet:
    """Lab hosts in these states, `workers` built at once; on any failure none is left."""
    fleet = Fleet(key)
    t0 = time.monotonic()

    def one(kind: Kind) -> tuple[LabHost, Kind]:
        lab = make_host(key)
        try:
            setup(lab, kind)
        except BaseException:
            lab.close()
            raise
        return lab, kind

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, kind) for kind in kinds]
        errors = []
        for f in futures:
            try:
                fleet.hosts.append(f.result())
            except Exception as e:  # noqa: BLE001 - collect, clean up, then raise the first
                errors.append(e)
    if errors:
        fleet.close(workers)
        raise errors[0]
    fleet.build_seconds = time.monotonic() - t0
    return fleet


def setup(lab: LabHost, kind: Kind) -> None:
    plain_root_shell(lab)
    if kind.mail.startswith("exim"):
        lab.start_exim("loopback" if kind.mail == "exim-loopback" else "public")
    if kind.mail == "exim+dovecot":
        lab.start_dovecot(tls=True)
    firewall(lab, kind.firewall)
    if kind.slow:
        slowbin = lab.workdir / "slowbin"
        slowbin.mkdir()
        wrapper = slowbin / "iptables-save"
        wrapper.write_text(f"#!/bin/sh\nsleep \"$(cat {slowbin / 'seconds'})\"\n"
                           "exec /usr/sbin/iptables-save \"$@\"\n")
        wrapper.chmod(0o755)
        set_slow(lab, kind.slow)
        lab.ssh_env["PATH"] = f"{slowbin}:{SBIN_PATH}"
    lab.restart_sshd()  # it sees the host's passwd and PATH
    if kind.dead:
        lab.stop_sshd()


def set_slow(lab: LabHost, seconds: float) -> None:
    """How long the slow host's iptables-save takes from now on."""
    (lab.workdir / "slowbin" / "seconds").write_text(f"{seconds:g}\n")


def plain_root_shell(lab: LabHost) -> None:
    """root's shell is /bin/sh in this host (its own /etc/passwd, bound by `ip netns exec`),
    so an SSH session runs no rc file, as on a server whose root has a plain shell. This
    machine's root ~/.bashrc (pyenv init) would add ~0.3 s of CPU to every session, which
    would weigh on Ansible's many sessions per host far more than on mailcheck's two."""
    lines = Path("/etc/passwd").read_text().splitlines()
    root = [line.split(":") for line in lines if line.startswith("root:")][0]
    root[6] = "/bin/sh"
    rest = [line for line in lines if not line.startswith("root:")]
    (lab.etc / "passwd").write_text("\n".join([":".join(root), *rest]) + "\n")


def firewall(lab: LabHost, state: str) -> None:
    if state == "guide1":  # policy ACCEPT with DROP rules
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", MAIL_PORTS, "-j", "DROP")
    elif state == "guide2":  # policy DROP, only SSH allowed
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-A", "INPUT", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT")
            lab.sh(tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
            lab.sh(tool, "-P", "INPUT", "DROP")
    elif state == "ufw":
        lab.sh("ufw", "default", "deny", "incoming")
        lab.sh("ufw", "allow", "22/tcp")
        lab.sh("ufw", "--force", "enable", timeout=60)
    elif state == "nft":
        lab.sh("nft", "add table inet mail")
        lab.sh("nft", "add chain inet mail input { type filter hook input priority 0; policy accept; }")
        lab.sh("nft", f"add rule inet mail input tcp dport {{ {MAIL_PORTS} }} drop")
    elif state != "open":
        raise ValueError(f"unknown firewall state {state!r}")


def dns_world(fleet: Fleet, dnslab: DnsLab) -> dict[str, str]:
    """Serve in `dnslab`: fleet.test (mxN A and AAAA), every host address's PTR (mxN.fleet.test,
    so forward-confirmed), a DNSBL listing none of them; return the settings (environment)
    that make mailcheck ask that lab: its resolver, DNSBL zone, RDAP server and CA (and
    nothing outside it: the outbound test and whois off)."""
    def ptr(address: str) -> str:
        return f"{dns.reversename.from_address(address)} PTR {fleet.name(lab)}.fleet.test."

    names, v4, v6 = [], [], []
    for lab, _ in fleet.hosts:
        names += [f"{fleet.name(lab)} A {lab.ip}", f"{fleet.name(lab)} AAAA {lab.ip6}"]
        v4.append(ptr(lab.ip))
        v6.append(ptr(lab.ip6))
    world(dnslab, Zone("fleet.test", "\n".join(names), signed=False),
          Zone("18.198.in-addr.arpa", "\n".join(v4), signed=False),  # 198.18.0.0/16
          Zone("2.0.0.0.1.0.0.2.ip6.arpa", "\n".join(v6), signed=False),  # 2001:2::/32
          dnsbl=standard_dnsbl())
    return {"MAILCHECK_RESOLVERS": dnslab.resolver, "MAILCHECK_DNSBL_ZONES": "bl.test",
            "MAILCHECK_RDAP_URL": "https://rdap.lab.test/", "MAILCHECK_CA_FILE": str(dnslab.ca_file),
            # nothing outside the lab (tests/guard.py): no outbound targets, no whois server
            "MAILCHECK_OUTBOUND_TARGETS": "off", "MAILCHECK_WHOIS_SERVER": "off"}


@contextlib.contextmanager
def fleet_of(key: Path, kinds: list[Kind], workers: int = 8):
    fleet = build_fleet(key, kinds, workers)
    try:
        yield fleet
    finally:
        fleet.close(workers)
