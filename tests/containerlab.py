"""Mail in containers behind a lab host: the published ports are DNATed through FORWARD.

Three ways to put a container behind a LabHost (see ../shared/LAB.md, "A container
behind a lab host"); each container network uses 198.19.N.0/24 (N = the host's
index), the bridge 198.19.N.1, the container 198.19.N.2:

- Dockerd: Debian's REAL dockerd (docker.io 20.10.24) run in the host's network
  namespace with its own data/exec roots and socket. It writes its own iptables
  rules (iptables-nft, or iptables-legacy when the PATH it sees says so), starts
  the real docker-proxy for each published port, and runs a real container
  (Debian 12 + Postfix, imported from scripts/lab-rootfs). `docker ps` over the
  host's SSH answers (DOCKER_HOST is set for SSH sessions).
- Podman: Debian's REAL podman 4.3.1 with netavark 1.4.0 (its iptables driver),
  same container image; `podman ps` over SSH answers (CONTAINERS_CONF and
  CONTAINERS_STORAGE_CONF are set for SSH sessions).
- NetnsContainer: a namespace of our own joined to a bridge in the host, Exim
  (the host's package) listening in it, and the firewall layout of an engine
  we cannot install here written from a file in tests/data/containers/ whose
  header names the upstream source (file and commit) it was copied from:
  Docker 28+ iptables, Docker's nftables backend, netavark's nftables driver.
  Optionally the real /usr/sbin/docker-proxy (Docker's userland proxy) per port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LAYOUTS = Path(__file__).parent / "data" / "containers"
REPO = Path(__file__).parent.parent
IMAGE = "mailcheck-lab/postfix:bookworm"
DOCKER = "/usr/bin/docker"  # Debian's CLI (the machine may have another docker first in PATH)
# The container's command: Debian's postfix with submission enabled, in the foreground.
MAIL_COMMAND = ("sh", "-c", "postconf -e myhostname=mx.lab.test maillog_file=/dev/stdout "
                "smtpd_banner='$myhostname ESMTP' && "
                "postconf -M submission/inet='submission inet n - y - - smtpd' && exec postfix start-fg")


def _run(*argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {r.returncode}: {r.stderr.strip()[-1500:]}")
    return r


def rootfs(flavour: str = "postfix") -> Path:
    """The cached Debian 12 rootfs (built once by scripts/lab-rootfs, a few minutes)."""
    out = _run(str(REPO / "scripts" / "lab-rootfs"), flavour, timeout=1200).stdout
    return Path(out.strip().splitlines()[-1])


@dataclass
class Net:
    """The container network of host index N."""
    index: int

    @property
    def subnet(self) -> str:
        return f"198.19.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"198.19.{self.index}.1"

    @property
    def container_ip(self) -> str:
        return f"198.19.{self.index}.2"


def unmount_under(path: Path) -> None:
    """Lazily unmount everything an engine left mounted under path (deepest first)."""
    prefix = str(path) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run("umount", "-l", target, check=False)


def podman_state(d: Path, netavark: bool = False) -> dict[str, str]:
    """Podman's storage and engine settings of its own under `d` (cgroupfs and runc, as these
    machines need; netavark's networks under d/net); returns the environment naming them."""
    for sub in ("root", "run", "tmp", "net"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{d}/root"\nrunroot = "{d}/run"\n')
    network = f'[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "{d}/net"\n'
    (d / "containers.conf").write_text(
        f'[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\ntmp_dir = "{d}/tmp"\n'
        f'events_logger = "file"\nevents_logfile_path = "{d}/events.log"\nstatic_dir = "{d}/root/libpod"\n'
        f'volume_path = "{d}/root/volumes"\n' + (network if netavark else ""))
    return {"CONTAINERS_CONF": str(d / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf")}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def listening_in(pid: int) -> set[int]:
    """TCP ports listening in the network namespace of pid."""
    out = _run("nsenter", f"--net=/proc/{pid}/ns/net", "ss", "-Hltn", check=False).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


# --- the real engines ------------------------------------------------------------------------

class _Engine:
    """What docker and podman share: import the Postfix image, run it with ports published."""
    run_options: tuple[str, ...] = ()

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def load_image(self) -> None:
        if self.cli("image", "inspect", IMAGE, check=False).returncode == 0:
            return
        tar = subprocess.Popen(["tar", "-C", str(rootfs()), "-c", "."], stdout=subprocess.PIPE)
        self.cli("import", "-", IMAGE, stdin=tar.stdout)
        tar.wait()

    def run_mail(self, name: str = "mail", publish: tuple[int, ...] = (25, 587)) -> int:
        """Run the Postfix container with these ports published; returns its pid once it listens."""
        self.load_image()
        ports = [a for p in publish for a in ("-p", f"{p}:{p}")]
        self.cli("run", "-d", "--name", name, *self.run_options, *ports, IMAGE, *MAIL_COMMAND)
        pid = int(self.cli("inspect", "-f", "{{.State.Pid}}", name).stdout)
        wait_for(lambda: set(publish) <= listening_in(pid), 30, f"container {name} not listening")
        return pid


@dataclass
class Dockerd(_Engine):
    """Debian's dockerd in a lab host. iptables: 'nft' (Debian's default) or 'legacy'."""
    host: object
    iptables: str = "nft"
    userland_proxy: bool = True
    proc: subprocess.Popen | None = None

    @property
    def dir(self) -> Path:
        return self.host.workdir / "docker"

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def net(self) -> Net:
        return Net(self.host.index)

    def start(self) -> Dockerd:
        self.dir.mkdir(exist_ok=True)
        (self.dir / "daemon.json").write_text("{}\n")
        env = dict(os.environ)
        if self.iptables == "legacy":  # dockerd runs `iptables` from its PATH: make it the legacy one
            legacy = self.dir / "legacy-bin"
            legacy.mkdir(exist_ok=True)
            for name in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
                         "ip6tables-restore"):
                (legacy / name).symlink_to("/usr/sbin/xtables-legacy-multi")
            env["PATH"] = f"{legacy}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        argv = ["nsenter", f"--net=/run/netns/{self.host.ns}", "dockerd",
                "--config-file", str(self.dir / "daemon.json"), "--data-root", str(self.dir / "data"),
                "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "docker.pid"),
                "-H", f"unix://{self.socket}", "--bip", f"{self.net.gateway}/24",
                "--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs",
                f"--userland-proxy={'true' if self.userland_proxy else 'false'}"]
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "dockerd.log", "w"), start_new_session=True)
        self.host.cleanups.append(self.stop)
        wait_for(lambda: self.cli("version", check=False).returncode == 0 or self.proc.poll() is not None,
                 60, "dockerd did not answer")
        if self.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited: {(self.dir / 'dockerd.log').read_text()[-2000:]}")
        self.host.set_ssh_env(DOCKER_HOST=f"unix://{self.socket}")
        return self

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return _run(DOCKER, "-H", f"unix://{self.socket}", *args, check=check, timeout=timeout, **kw)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            ids = self.cli("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.cli("rm", "-f", *ids, check=False, timeout=60)
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        if self.proc.poll() is None:
            self.proc.kill()
        unmount_under(self.dir)
        self.proc = None


@dataclass
class Podman(_Engine):
    """Debian's podman 4.3.1 + netavark 1.4.0 (iptables driver) in a lab host, rootful."""
    host: object
    env: dict = field(default_factory=dict)

    @property
    def run_options(self) -> tuple[str, ...]:  # the ulimits podman needs on these machines
        return ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                "--network", "labnet", "--ip", self.net.container_ip)

    @property
    def dir(self) -> Path:
        return self.host.workdir / "podman"

    @property
    def net(self) -> Net:
        return Net(self.host.index)

    def start(self) -> Podman:
        self.env = podman_state(self.dir, netavark=True)
        self.host.cleanups.append(self.stop)
        self.cli("network", "create", "--subnet", self.net.subnet, "--gateway", self.net.gateway, "labnet")
        self.host.set_ssh_env(**self.env)
        return self

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        """podman inside the host's network namespace (netavark writes the rules there)."""
        env = {**os.environ, **self.env}
        return _run("nsenter", f"--net=/run/netns/{self.host.ns}", "podman", *args, check=check,
                    timeout=timeout, env=env, **kw)

    def stop(self) -> None:
        if not self.env:
            return
        with contextlib.suppress(Exception):
            self.cli("rm", "-f", "-a", "-t", "2", check=False, timeout=60)
        unmount_under(self.dir)
        self.env = {}


# --- a namespace of our own, with a layout written from upstream's source ---------------------

@dataclass
class NetnsContainer:
    """A 'container': namespace mcNc on a bridge in host mcN, Exim listening in it."""
    host: object
    bridge: str = "docker0"
    proxies: list[int] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{self.host.ns}c"  # mcN is ours (allocated atomically), so mcNc is too

    @property
    def net(self) -> Net:
        return Net(self.host.index)

    @property
    def workdir(self) -> Path:
        return self.host.workdir / "container"

    def values(self) -> dict[str, str]:
        n = self.net
        return {"bridge": self.bridge, "subnet": n.subnet, "gateway": n.gateway, "cip": n.container_ip,
                "veth": f"veth{self.host.index}c",
                "subnet_": n.subnet.replace(".", "_").replace("/", "_nm")}

    def start(self, ports: tuple[int, ...] = (25, 587)) -> NetnsContainer:
        v = self.values()
        self.workdir.mkdir(exist_ok=True)
        self.host.cleanups.append(self.stop)
        _run("ip", "netns", "add", self.ns)
        etc = Path("/etc/netns") / self.ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {v['gateway']}\n")  # nothing leaves the lab
        self.host.sh("ip", "link", "add", v["bridge"], "type", "bridge")
        self.host.sh("ip", "addr", "add", f"{v['gateway']}/24", "dev", v["bridge"])
        self.host.sh("ip", "link", "set", v["bridge"], "up")
        self.host.sh("ip", "link", "add", v["veth"], "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        self.host.sh("ip", "link", "set", v["veth"], "master", v["bridge"], "up")
        self.sh("ip", "addr", "add", f"{v['cip']}/24", "dev", "eth0")
        self.sh("ip", "link", "set", "eth0", "up")
        self.sh("ip", "link", "set", "lo", "up")
        self.sh("ip", "route", "add", "default", "via", v["gateway"])
        self.host.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")  # the host's namespace only
        spec = " ; ".join(f"0.0.0.0.{p}" for p in ports)
        self.sh("exim4", "-bd", "-oP", str(self.workdir / "exim.pid"), "-oX", f"<; {spec}")
        wait_for(lambda: set(ports) <= self.listening(), 15, "exim in the container not listening")
        return self

    def sh(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def listening(self) -> set[int]:
        out = self.sh("ss", "-Hltn").stdout
        return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}

    def apply_layout(self, name: str, publish: tuple[int, ...] = (25, 587)) -> Path:
        """Write tests/data/containers/NAME (.rules: iptables-restore; .nft: nft -f) into the host."""
        src = next(LAYOUTS.glob(f"{name}.*"))
        text = template_layout(src.read_text(), self.values(), publish)
        dst = self.workdir / src.name
        dst.write_text(text)
        if src.suffix == ".nft":
            self.host.sh("nft", "-f", str(dst))
        else:
            restore = "iptables-legacy-restore" if ".legacy" in src.name else "iptables-restore"
            self.host.sh(restore, "--noflush", str(dst))
        return dst

    def start_proxy(self, port: int) -> None:
        """Docker's own userland proxy (/usr/sbin/docker-proxy), started per port and address
        family as dockerd starts it: it reports "0\\n" (ready) on fd 3, a pipe to its parent."""
        for host_ip in ("0.0.0.0", "::"):
            ready_r, ready_w = os.pipe()
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host.ns, "/usr/sbin/docker-proxy", "-proto", "tcp",
                 "-host-ip", host_ip, "-host-port", str(port), "-container-ip", self.net.container_ip,
                 "-container-port", str(port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, pass_fds=(3,), preexec_fn=lambda w=ready_w: os.dup2(w, 3))
            os.close(ready_w)
            with os.fdopen(ready_r) as ready:
                status = ready.read(2)
            if status != "0\n":
                raise RuntimeError(f"docker-proxy for {host_ip}:{port} failed: {status!r}")
            self.host.pids_started.append(proc.pid)
            self.proxies.append(proc.pid)
        self.host.wait_listening({port})

    def stop(self) -> None:
        out = _run("ip", "netns", "pids", self.ns, check=False).stdout
        for pid in map(int, out.split()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _run("ip", "netns", "del", self.ns, check=False)
        subprocess.run(["rm", "-rf", f"/etc/netns/{self.ns}"], check=False)


def template_layout(text: str, values: dict[str, str], publish: tuple[int, ...]) -> str:
    """{bridge} {subnet} {subnet_} {gateway} {cip} {veth}; each run of consecutive lines holding
    {port} is repeated per published port, as the engines write one group of rules per port."""
    out: list[str] = []
    block: list[str] = []

    def fill(line: str) -> str:
        for k, v in values.items():
            line = line.replace("{" + k + "}", v)
        return line

    def flush() -> None:
        out.extend(fill(line.replace("{port}", str(p))) for p in publish for line in block)
        block.clear()

    for line in text.splitlines():
        if "{port}" in line and not line.lstrip().startswith("#"):
            block.append(line)
            continue
        flush()
        out.append(fill(line))
    flush()
    return "\n".join(out) + "\n"


def json_lines(text: str) -> list[dict]:
    """`docker ps --format json` style output: one JSON object a line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
