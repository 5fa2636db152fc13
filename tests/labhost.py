"""Real mail hosts on one machine, for the lab tests (see ../shared/LAB.md).

A LabHost is a network namespace joined to the root namespace ("outside") by
a veth pair, with a real sshd, optionally real Exim and Dovecot, and its own
netfilter tables and /etc/netns files (ufw state, /etc/default, os-release,
/etc/iptables). Addresses come from 198.18.0.0/15 and 2001:2::/48, the ranges
reserved for network tests, and only for namespaces made here.

Each host gets a free index N (1..250): namespace mcN, outside veth mcvN,
outside address 198.18.N.1, host address 198.18.N.2 (and 2001:2:0:N::1/::2).
Several test processes may run at once: `ip netns add` allocates atomically.
Each host's /etc/netns/mcN/resolv.conf names a resolver inside the lab, so its lookups
never leave this machine: a LabResolver (tests/labdns.py) on 198.18.N.1:53, or the lab
address given as make_host(resolver=...).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.labdns import LabResolver, is_lab_address

# Every program the lab runs on this machine: these fixtures, the lab tests, the firewall
# corpus' setup commands, lab_firewalld.sh, the demo, and what mailcheck runs on a lab host.
# _run() and LabHost.sh(), .popen() and .daemon() refuse a program not declared here;
# tests/test_packages.py finds the programs lab code names and checks that each is declared
# here and comes from a Debian package in scripts/apt-packages.txt (or a required one).
REQUIRED = (
    # hosts: namespaces and links, sshd, the mail daemons, TLS, lookups, listeners
    "ip", "ss", "sshd", "ssh", "ssh-keygen", "exim4", "dovecot", "openssl", "getent", "python3",
    # firewalls, as the corpus and the fix tests set them up and read them
    "iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
    "ip6tables-restore", "iptables-legacy", "ip6tables-legacy", "iptables-legacy-save",
    "ip6tables-legacy-save", "nft", "ufw", "ipset",
    # firewalld in a host (lab_firewalld.sh): its own D-Bus and a private /etc/firewalld
    "firewalld", "firewall-cmd", "dbus-daemon", "unshare", "mount",
    # what mailcheck runs on a lab host: the guide's tools, and the minimal PATH of
    # test_check_faults.test_missing_commands
    "dig", "lsof", "nc", "whois", "ps", "ls", "tail", "timeout", "mktemp", "rm", "setsid",
    "uname", "curl",  # the resolver step's host name; the provider step's cloud metadata
    # a router namespace between the prober and a host (tests/labrouter.py) forwards (sysctl,
    # below); a resolver namespace runs unbound (tests/labresolver.py), as the DNS lab
    # (tests/dnslab.py) does
    "knotd", "knotc", "unbound", "unbound-control", "rbldnsd",
    # plumbing, and what tests/test_packages.py asks
    "sh", "env", "cat", "cp", "mkdir", "sleep", "dpkg", "dpkg-query",
    # issue 11's labs: containers, firewall managers, the Postfix rootfs, kernel paths
    "dockerd", "docker-proxy", "podman", "conntrack", "fail2ban-client", "debootstrap", "nsenter",
    "update-exim4.conf", "sysctl", "umount", "chown", "kill", "docker",
    # issue 11 services: a Dovecot stopped as an administrator stops it; rootless containers'
    # port holders (tests/services_recordings.py record_rootless)
    "doveadm", "pasta", "slirp4netns",
    # issue 14: the PostgreSQL of the replica tests (tests/pglab.py), run as its own user
    "initdb", "pg_ctl", "runuser",
)
# What mailcheck asks a host that no Debian package provides: it runs (exit 127) where a test
# did not install it. csf: real CSF from a public snapshot (tests/csflab.py).
OUTSIDE_DEBIAN = ("csf",)
SBIN_PATH = ":".join(["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      *map(str, sorted(Path("/usr/lib/postgresql").glob("*/bin")))])


class UndeclaredProgram(RuntimeError):
    """Lab code ran a program that REQUIRED does not declare."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the lab (empty when it can run it)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need it)")
    missing += [prog for prog in REQUIRED if not shutil.which(prog, path=SBIN_PATH)]
    return missing


def programs_run(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The programs an argv runs: its first word, and what `env` or `ip netns exec` runs."""
    names, rest = [], list(argv)
    while rest:
        names.append(Path(rest[0]).name)
        if names[-1] == "env":
            rest = rest[1:]
            while rest and ("=" in rest[0] or rest[0].startswith("-")):
                rest = rest[1:]
        elif rest[:3] == ["ip", "netns", "exec"]:
            rest = rest[4:]
        else:
            break
    return names


def require_declared(argv: tuple[str, ...] | list[str]) -> None:
    for name in programs_run(argv):
        if name not in REQUIRED and name not in OUTSIDE_DEBIAN:
            raise UndeclaredProgram(
                f"the lab ran {name!r} ({' '.join(argv)[:120]}), which tests/labhost.py REQUIRED "
                "does not declare: add it there, and its Debian package to scripts/apt-packages.txt")


def _run(*argv: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    require_declared(argv)
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, **kw)


def no_forwarding(link: str) -> None:
    """This machine never routes what arrives on a lab link onwards, whatever ip_forward says.

    IPv4 decides forwarding by the receiving link's own knob, so a machine left with
    net.ipv4.ip_forward=1 (by a container engine, or a run killed before its sysctl guard
    restored it) still keeps every lab packet here. IPv6 has no such per-link knob:
    test_lab_isolation checks the machine's own.
    """
    Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").write_text("0")


def probe(address: str, port: int, timeout: float = 1.5) -> str:
    """A TCP connect from here: 'open', 'refused' or 'filtered' (as `nc -vz`)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "filtered"
        except OSError as e:  # e.g. host unreachable from an ICMP reject
            return f"error:{e.errno}"


@dataclass
class LabHost:
    index: int
    workdir: Path
    client_key: Path
    os_release: str | None = None
    ipv6: bool = True
    resolver: str | None = None  # None: a LabResolver of our own on outside_ip:53
    dns: LabResolver | None = None
    pids_started: list[int] = field(default_factory=list)
    cleanups: list = field(default_factory=list)  # run first at close(), last added first
    ssh_env: dict[str, str] = field(default_factory=dict)  # sshd SetEnv for every session
    sshd_prefix: list[str] = field(default_factory=list)  # argv sshd runs under (tests/eximlab.py)
    _provider_table: bool = False

    # --- names and addresses -------------------------------------------------
    @property
    def ns(self) -> str:
        return f"mc{self.index}"

    @property
    def veth(self) -> str:
        return f"mcv{self.index}"

    @property
    def ip(self) -> str:
        return f"198.18.{self.index}.2"

    @property
    def outside_ip(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def ip6(self) -> str:
        return f"2001:2:0:{self.index:x}::2"

    @property
    def outside_ip6(self) -> str:
        return f"2001:2:0:{self.index:x}::1"

    @property
    def etc(self) -> Path:
        return Path("/etc/netns") / self.ns

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    # --- running things inside -----------------------------------------------
    def sh(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run argv inside the host (its namespace and its /etc/netns files)."""
        if self.dbus_socket.exists():  # firewalld runs in this host: firewall-cmd needs its bus
            argv = ("env", f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={self.dbus_socket}", *argv)
        return _run("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    @property
    def dbus_socket(self) -> Path:
        """The host's own D-Bus system bus (tests/lab_firewalld.sh starts it, with firewalld)."""
        return self.workdir / "dbus" / "bus"

    def session(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run argv as the host's SSH sessions see it: in sshd's own mount namespace when sshd runs
        under a wrapper that made one (sshd_prefix: tests/eximlab.py, tests/csflab.py), else as sh()."""
        if not self.sshd_prefix:
            return self.sh(*argv, check=check, timeout=timeout)
        pid = (self.workdir / "sshd.pid").read_text().strip()
        return _run("nsenter", "-t", pid, "-m", "-n", *argv, check=check, timeout=timeout)

    def nsenter(self, *argv: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run argv in the host's network namespace only: unlike `ip netns exec`, /sys (with the
        cgroup mounts dockerd and podman need) and /etc are the machine's own."""
        return _run("nsenter", f"--net=/run/netns/{self.ns}", *argv, check=check, timeout=timeout, **kw)

    def set_ssh_env(self, **env: str) -> None:
        """Restart the host's sshd so every session gets these variables (e.g. DOCKER_HOST)."""
        self.ssh_env.update(env)
        self.restart_sshd()

    def restart_sshd(self) -> None:
        """A new sshd: it sees /etc/netns files made since (`ip netns exec` binds them at
        start) and the current ssh_env."""
        self.stop_sshd()
        self._start_sshd()

    def stop_sshd(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.workdir / "sshd.pid").read_text()), signal.SIGTERM)
        self.wait_listening({22}, absent=True)

    def start_firewalld(self) -> None:
        """firewalld in this host, on its own bus, with its own copy of /etc/firewalld. The
        host's SSH sessions see that copy and that bus, as on a real host: a fix's backup and
        restore of /etc/firewalld are the host's (never this machine's), and its reload reads them."""
        script = Path(__file__).parent / "lab_firewalld.sh"
        self.sh("sh", str(script), str(self.workdir), timeout=60)
        etc = self.workdir / "firewalld-etc"
        self.sshd_prefix = [*(self.sshd_prefix or ["unshare", "-m", "--propagation", "private"]),
                            "sh", "-c", f'mount --bind {etc} /etc/firewalld && exec "$@"', "sh"]
        self.set_ssh_env(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.dbus_socket}")

    def popen(self, *argv: str, **kw) -> subprocess.Popen:
        """Start a long-running program inside the host, in a session of its own."""
        require_declared(argv)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        self.pids_started.append(proc.pid)
        return proc

    def daemon(self, *argv: str) -> None:
        """Start a self-daemonizing program inside the host (its fds not kept)."""
        require_declared(argv)
        err = self.workdir / f"{Path(argv[0]).name}.start.log"
        with open(err, "w") as fh:
            rc = subprocess.run(["ip", "netns", "exec", self.ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=fh, stderr=fh, timeout=30).returncode
        if rc != 0:
            raise RuntimeError(f"{self.ns}: {argv[0]} exited {rc}: {err.read_text()}")

    def iptables_save(self, six: bool = False) -> str:
        return self.sh("ip6tables-save" if six else "iptables-save").stdout

    def rules(self, save: str = "iptables-save") -> str:
        """`save`'s output without its "# Generated/Completed ... <time>" lines and with the
        packet counters zeroed: equal exactly when the rules are (for byte comparisons)."""
        out = self.sh(save).stdout
        lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", ln) for ln in out.splitlines()
                 if not ln.startswith("#")]
        return "\n".join(lines) + "\n"

    def sshd_sessions(self) -> list[int]:
        """The per-connection sshd processes (not the listener)."""
        listener = int((self.workdir / "sshd.pid").read_text().split()[0]) \
            if (self.workdir / "sshd.pid").exists() else None
        return [p for p in self.pids() if self._comm(p) == "sshd" and p != listener]

    def listening(self) -> set[int]:
        out = self.sh("ss", "-Hltn").stdout
        return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}

    def wait_listening(self, ports: set[int], timeout: float = 10.0, absent: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.listening()
            if (not (now & ports)) if absent else ports <= now:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.ns}: ports {sorted(ports)} {'still' if absent else 'not'} listening")

    # --- setup ---------------------------------------------------------------
    def _setup_network(self) -> None:
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        _run("ip", "addr", "add", f"{self.outside_ip}/30", "dev", self.veth)
        _run("ip", "link", "set", self.veth, "up")
        no_forwarding(self.veth)
        self.sh("ip", "addr", "add", f"{self.ip}/30", "dev", "eth0")
        if self.ipv6:
            _run("ip", "-6", "addr", "add", f"{self.outside_ip6}/64", "dev", self.veth, "nodad")
            self.sh("ip", "-6", "addr", "add", f"{self.ip6}/64", "dev", "eth0", "nodad")
        self.sh("ip", "link", "set", "eth0", "up")
        self.sh("ip", "link", "set", "lo", "up")

    def _setup_etc(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        for name in ("ufw", "default"):
            if Path("/etc", name).exists():
                shutil.copytree(Path("/etc", name), self.etc / name, symlinks=True)
        # A private /etc/iptables (rules.v4/v6) per host; the bind mount needs the target.
        Path("/etc/iptables").mkdir(exist_ok=True)
        (self.etc / "iptables").mkdir(exist_ok=True)
        if self.os_release is not None:
            (self.etc / "os-release").write_text(self.os_release)

    def lab_names(self) -> dict[str, list[str]]:
        """The names our resolver gives: the host, and the outside end of its link."""
        host, outside = [self.ip], [self.outside_ip]
        if self.ipv6:
            host, outside = host + [self.ip6], outside + [self.outside_ip6]
        return {f"mx{self.index}.lab.test": host, f"outside.mx{self.index}.lab.test": outside}

    def _setup_resolver(self) -> None:
        """The host's own resolv.conf, naming a resolver in the lab: ours unless given one."""
        if self.resolver is None:
            self.dns = LabResolver(self.outside_ip, self.lab_names()).start()
        (self.etc / "resolv.conf").write_text(
            f"# lab host {self.ns}: every lookup goes to a resolver inside the lab\n"
            f"nameserver {self.resolver or self.outside_ip}\noptions timeout:1 attempts:1\n")

    def _setup_sshd(self) -> None:
        hostkey = self.workdir / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
        auth = self.workdir / "authorized_keys"
        auth.write_text(Path(f"{self.client_key}.pub").read_text())
        pub = " ".join(Path(f"{hostkey}.pub").read_text().split()[:2])
        lines = [f"{self.ip} {pub}"] + ([f"{self.ip6} {pub}"] if self.ipv6 else [])
        self.known_hosts.write_text("\n".join(lines) + "\n")
        self._start_sshd()

    def _start_sshd(self) -> None:
        hostkey, auth = self.workdir / "ssh_host_ed25519_key", self.workdir / "authorized_keys"
        Path("/run/sshd").mkdir(exist_ok=True)
        setenv = " ".join(f"{k}={v}" for k, v in self.ssh_env.items())
        options = ["-D", "-e", "-p", "22", "-h", str(hostkey), "-o", "StrictModes=no",
                   "-o", f"AuthorizedKeysFile={auth}", "-o", f"PidFile={self.workdir / 'sshd.pid'}",
                   "-o", "MaxSessions=10", "-o", "UseDNS=no", *(["-o", f"SetEnv={setenv}"] if setenv else [])]
        # sshd_prefix: a wrapper that execs sshd (tests/eximlab.py, csflab.py); the plain call
        # names sshd literally, as tests/test_packages.py reads it.
        with open(self.workdir / "sshd.log", "a") as log:
            if self.sshd_prefix:
                self.popen(*self.sshd_prefix, "/usr/sbin/sshd", *options, stdout=subprocess.DEVNULL, stderr=log)
            else:
                self.popen("/usr/sbin/sshd", *options, stdout=subprocess.DEVNULL, stderr=log)
        self.wait_listening({22})

    # --- mail services -------------------------------------------------------
    def exim_tls_cert(self, name: str | None = None) -> Path:
        """A fresh self-signed certificate for exim's STARTTLS (cert.pem, key.pem in a
        directory the exim user can read); returns the directory."""
        tls = self.workdir / "exim-tls"
        tls.mkdir(exist_ok=True)
        os.chmod(self.workdir, 0o711)
        os.chmod(tls, 0o755)
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", f"/CN={name or f'mx{self.index}.lab.test'}",
             "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"))
        for f in ("key.pem", "cert.pem"):
            os.chmod(tls / f, 0o644)  # a throwaway lab key: the exim user must read it
        return tls

    def start_exim(self, listen: str = "public", ports: tuple[int, ...] = (25, 465, 587),
                   tls: Path | None = None) -> None:
        """Exim as a daemon: 'public' on 0.0.0.0 (and ::), or Debian's default 'loopback'.
        tls: a directory from exim_tls_cert(): STARTTLS offered with that certificate."""
        argv = ["exim4", "-bd", "-oP", str(self.workdir / "exim.pid")]
        if tls is not None:
            argv += ["-DMAIN_TLS_ENABLE=yes", f"-DMAIN_TLS_CERTIFICATE={tls / 'cert.pem'}",
                     f"-DMAIN_TLS_PRIVATEKEY={tls / 'key.pem'}"]
        if listen == "public":
            addrs = [f"0.0.0.0.{p}" for p in ports]
            if self.ipv6:
                addrs = [f"::0.{p}" for p in ports] + addrs
            argv += ["-oX", "<; " + " ; ".join(addrs)]
        elif listen == "loopback":
            argv += ["-oX", "<; " + " ; ".join(f"127.0.0.1.{p}" for p in ports)]
        self.daemon(*argv)
        self.wait_listening(set(ports))

    def stop_exim(self) -> None:
        self._kill_named("exim4")

    def start_dovecot(self, tls: bool = True) -> None:
        base = self.workdir / "dovecot"
        base.mkdir(exist_ok=True)
        cert, key = self.workdir / "imap.crt", self.workdir / "imap.key"
        ssl = "ssl = no"
        if tls:
            if not cert.exists():
                _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                     "-subj", f"/CN=mx{self.index}.lab.test", "-keyout", str(key), "-out", str(cert))
            ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
        conf = self.workdir / "dovecot.conf"
        conf.write_text(
            f"protocols = imap\nlisten = *{', ::' if self.ipv6 else ''}\n"
            f"base_dir = {base}/run\nstate_dir = {base}/state\ninstance_name = dovecot-{self.ns}\n"
            f"{ssl}\nlog_path = {base}/dovecot.log\n"
            "passdb {\n  driver = static\n  args = password=x\n}\n"
            "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/tmp/home-%u\n}\n"
        )
        self.daemon("dovecot", "-c", str(conf))
        self.wait_listening({143, 993} if tls else {143})

    def stop_dovecot(self) -> None:
        self._kill_named("dovecot")

    def _kill_named(self, comm: str) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self._comm(p) == comm for p in self.pids()):
            time.sleep(0.05)

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    def pids(self) -> list[int]:
        out = _run("ip", "netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]

    # --- the network outside the host ----------------------------------------
    def probe(self, port: int, six: bool = False, timeout: float = 1.5) -> str:
        """The guide's `nc -vz IP PORT`, from outside (the root namespace)."""
        return probe(self.ip6 if six else self.ip, port, timeout)

    def connect_out(self, port: int, six: bool = False, timeout: float = 1.5) -> str:
        """A TCP connect from inside the host to the outside end of its link."""
        target = self.outside_ip6 if six else self.outside_ip
        code = (
            "import socket,sys\n"
            f"s=socket.socket(socket.AF_INET{'6' if six else ''});s.settimeout({timeout})\n"
            f"try:\n s.connect(({target!r},{port}));print('open')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except (TimeoutError, socket.timeout): print('filtered')\n"
            "except OSError as e: print('error:%s' % e.errno)\n"
        )
        return self.sh("python3", "-c", code, timeout=timeout + 10).stdout.strip()

    @contextlib.contextmanager
    def outside_listener(self, ports: tuple[int, ...] = (25, 465, 587), six: bool = False):
        """Listeners on the outside end of the link, for outbound checks."""
        socks = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET6 if six else socket.AF_INET)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.outside_ip6 if six else self.outside_ip, port))
                s.listen(16)
                socks.append(s)
            yield
        finally:
            for s in socks:
                s.close()

    def provider_blocks(self, ports: tuple[int, ...]) -> None:
        """Drop these ports on the way to the host, outside it (the guide's step 5).

        An nftables table of our own in the root namespace, matching only this
        host's veth; removed at teardown.
        """
        table = f"mclab_{self.index}"
        _run("nft", f"add table inet {table}")
        _run("nft", f"add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}")
        for p in ports:
            _run("nft", f"add rule inet {table} out oifname {self.veth} tcp dport {p} drop")
        self._provider_table = True

    # --- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if self._provider_table:
            _run("nft", f"delete table inet mclab_{self.index}", check=False)
        if self.dns is not None:
            self.dns.close()
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        # The namespace name is the allocation: free it last, so that another process
        # cannot take this index while our veth or /etc/netns files still exist.
        _run("ip", "link", "del", self.veth, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        _run("ip", "netns", "del", self.ns, check=False)


def _allocate() -> int:
    for i in range(1, 251):
        if _run("ip", "netns", "add", f"mc{i}", check=False).returncode == 0:
            return i
    raise RuntimeError("no free lab index (mc1..mc250 all exist)")


ROCKY_OS_RELEASE = (
    'NAME="Rocky Linux"\nVERSION="8.10 (Green Obsidian)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="8.10"\nPLATFORM_ID="platform:el8"\nPRETTY_NAME="Rocky Linux 8.10 (Green Obsidian)"\n'
)


def make_host(client_key: Path, *, os_release: str | None = None, ipv6: bool = True,
              resolver: str | None = None) -> LabHost:
    """A fresh lab host with sshd running. Call .close() (the fixture does).

    resolver: the lab address of the DNS server the host's resolv.conf names (e.g. the
    DNS lab's); by default a LabResolver (tests/labdns.py) on the outside end of its link.
    """
    if resolver is not None and not is_lab_address(resolver):
        raise ValueError(f"resolver {resolver!r} is not a lab address (198.18.0.0/15, "
                         "2001:2::/48): a lab host's lookups must stay in the lab")
    index = _allocate()
    host = LabHost(index=index, workdir=Path(tempfile.mkdtemp(prefix=f"mclab{index}-")),
                   client_key=client_key, os_release=os_release, ipv6=ipv6, resolver=resolver)
    try:
        host._setup_network()
        host._setup_etc()
        host._setup_resolver()
        host._setup_sshd()
    except BaseException:
        host.close()
        raise
    return host


def make_client_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    return key
