"""What the services step reads on real lab hosts, recorded for unit tests (issue 11, 15 item 8).

Each scenario builds a real host (Postfix rootfs, Debian's exim with its own /etc/exim4,
real dockerd or podman with a Postfix container, Dovecot with its own configuration), then
runs exactly the commands mailcheck runs there (the facts, then Services().commands(ctx)),
over mailcheck's own SSH transport, and writes them to tests/data/services/NAME/:
commands.json + one file per output (the firewall corpus' format, tests.firewall_corpus
load_captured reads it), and meta.json (the host's and the prober's addresses, and what the
outside probes saw of each mail port).

Record (root, lab packages):  python -m tests.services_recordings [NAMES...]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

from tests.labhost import LabHost

DATA = Path(__file__).parent / "data" / "services"
PORTS = (25, 465, 587, 143, 993)


def dovecot_conf(host: LabHost, *, log: bool = True) -> None:
    """Dovecot configured through the host's own /etc/dovecot (doveconf over SSH reads it), with
    its own base_dir and, when `log`, its own log file (log_path)."""
    etc = host.etc / "dovecot"
    etc.mkdir(parents=True, exist_ok=True)
    base = host.workdir / "dovecot"
    base.mkdir(exist_ok=True)
    (etc / "dovecot.conf").write_text(
        f"protocols = imap\nlisten = *, ::\nbase_dir = {base}/run\nstate_dir = {base}/state\n"
        f"instance_name = dovecot-{host.ns}\nssl = no\n"
        + (f"log_path = {base}/dovecot.log\n" if log else "")
        + "passdb {\n  driver = static\n  args = password=x\n}\n"
        "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/tmp/home-%u\n}\n")
    host.restart_sshd()  # sshd sees /etc/netns files made since it started


def start_in_sshd_namespace(host: LabHost, *argv: str) -> None:
    """Start a self-daemonizing program where the host's SSH sessions run (the sshd's mount
    and network namespaces: /etc/netns files and EximHost's private directories), its output
    to a file (a daemon keeps its fds: a pipe would never close)."""
    pid = (host.workdir / "sshd.pid").read_text().strip()
    with open(host.workdir / f"{argv[0]}.start.log", "w") as log:
        subprocess.run(["nsenter", "-t", pid, "-m", "-n", *argv], stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, timeout=30, check=True)


def scenario(name: str, host: LabHost):
    """Build the scenario on `host`; returns what must stay alive while recording."""
    from tests.containerlab import Dockerd, NetnsContainer, Podman
    from tests.eximlab import EximHost
    from tests.postfixlab import PostfixHost

    if name.startswith("postfix_"):
        kw = {"postfix_postscreen": dict(postscreen=True),
              "postfix_loopback_only": dict(inet_interfaces="loopback-only"),
              "postfix_no_submission": dict(submission=False)}[name]
        return PostfixHost(host).start(**kw)
    if name == "netns_docker28_nft":  # Docker 28's nftables layout, no userland proxy: DNAT only
        container = NetnsContainer(host).start((25, 587))
        container.apply_layout("docker28-nftables", (25, 587))
        return container
    if name.startswith(("docker_", "podman_")):
        engine = (Dockerd(host, userland_proxy=name != "docker_no_proxy") if name.startswith("docker")
                  else Podman(host)).start()
        engine.run_mail(publish=(25, 587))
        if name.endswith("_exited"):
            engine.cli("stop", "-t", "1", "mail")
        return engine
    exim = EximHost(host).setup(**({} if name == "exim_loopback" else {"dc_local_interfaces": ""}))
    exim.start()
    if name == "dovecot_down":
        dovecot_conf(host)
        start_in_sshd_namespace(host, "dovecot")
        host.wait_listening({143})
        exim.sh("doveadm", "stop")
        host.wait_listening({143}, absent=True)
    return exim


async def collect(host: LabHost) -> list:
    from bot.checks import facts
    from bot.checks.base import CheckContext
    from bot.checks.services import Services
    from bot.transport import SSHTransport
    from config.inventory import Host
    from config.settings import Settings

    h = Host(name=host.ns, address=host.ip, identity_file=host.client_key, known_hosts=host.known_hosts)
    t = SSHTransport(h, Settings(_env_file=None, connect_timeout=5))
    try:
        first = await t.run(facts.commands())
        ctx = CheckContext(facts.read_facts({r.command.argv: r for r in first}))
        return first + await t.run(Services().commands(ctx))
    finally:
        await t.close()


def own_processes(host: LabHost, results: list) -> list:
    """The `ps` output cut to this host's processes: the lab shares one pid space, so ps shows
    every process of the machine (other hosts', other tests'). Kept: the host's namespace's
    pids (`ip netns pids`) and the pids holding its sockets (ss; a Postfix host's own pid
    namespace numbers them its way)."""
    from dataclasses import replace

    from bot.checks.parse import parse_ss
    from bot.checks.services import PS, SS

    ss = next((r.stdout for r in results if r.command.argv == SS), "")
    mine = set(host.pids()) | {pid for x in parse_ss(ss) for _, pid in x.users}
    out = []
    for r in results:
        if r.command.argv == PS:
            lines = [ln for ln in r.stdout.splitlines(keepends=True)
                     if ln.split() and ln.split()[0].isdigit() and int(ln.split()[0]) in mine]
            r = replace(r, stdout="".join(lines))
        out.append(r)
    return out


def write(out: Path, results: list, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.txt"):  # a new recording replaces the old one (the commands may differ)
        old.unlink()
    index = []
    for i, r in enumerate(results):
        fname = f"{i:02d}_" + "_".join(a.strip("/").replace("/", "_") for a in r.command.argv[:4])[:60] + ".txt"
        (out / fname).write_text(r.stdout)
        index.append({"file": fname, "argv": list(r.command.argv), "env": [list(e) for e in r.command.env],
                      "exit_status": r.exit_status, "stderr": r.stderr})
    (out / "commands.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


SCENARIOS = ("postfix_postscreen", "postfix_loopback_only", "postfix_no_submission", "docker_running",
             "docker_exited", "docker_no_proxy", "netns_docker28_nft", "podman_running", "podman_exited",
             "exim_loopback", "dovecot_down")


def record(name: str, client_key: Path) -> Path:
    from tests.labhost import make_host

    host = make_host(client_key)
    try:
        scenario(name, host)
        time.sleep(0.5)
        results = own_processes(host, asyncio.run(collect(host)))
        outside = {f"{fam}/{p}": host.probe(p, six=fam == "ipv6") for fam in ("ipv4", "ipv6") for p in PORTS}
        meta = {"addresses": {"ipv4": host.ip, "ipv6": host.ip6},
                "sources": {"ipv4": host.outside_ip, "ipv6": host.outside_ip6}, "outside": outside}
        out = DATA / name
        write(out, results, meta)
        return out
    finally:
        host.close()


ROOTLESS = Path(__file__).parent / "data" / "containers" / "rootless"


def record_rootless() -> Path:
    """`ss -Hltnp` of the two rootless-container network helpers holding a host port: real
    pasta (passt) and slirp4netns (add_hostfwd over its API socket) forwarding port 25 into a
    namespace of their own. They run in a scratch namespace whose only link is a veth pair
    inside it (pasta wants a routable interface): nothing leaves it."""
    import os
    import signal

    from bot.checks.parse import parse_ss
    from tests.labhost import _run

    ns = f"mcrootless{os.getpid()}"
    _run("ip", "netns", "add", ns)
    procs = []
    try:
        for argv in (("ip", "link", "set", "lo", "up"), ("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"),
                     ("ip", "addr", "add", "198.18.252.2/24", "dev", "v0"), ("ip", "link", "set", "v0", "up"),
                     ("ip", "link", "set", "v1", "up"),
                     ("ip", "route", "add", "default", "via", "198.18.252.1", "dev", "v0", "onlink")):
            _run("ip", "netns", "exec", ns, *argv)
        ROOTLESS.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "pasta", "--config-net", "-t", "25", "--",
                                       "sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2)
        ss = _run("ip", "netns", "exec", ns, "ss", "-Hltnp").stdout
        (ROOTLESS / "pasta_ss.txt").write_text(ss)
        for x in parse_ss(ss):  # pasta forks into processes of its own: the ones holding the port
            for _, pid in x.users:
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not _run("ip", "netns", "exec", ns, "ss", "-Hltn").stdout.strip():
                break
            time.sleep(0.1)
        child = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-n", "sleep", "60"])
        sock = Path(tempfile.mkdtemp(prefix="mcslirp-")) / "api.sock"
        procs += [child, subprocess.Popen(["ip", "netns", "exec", ns, "slirp4netns", "--configure", "--api-socket",
                                           str(sock), str(child.pid), "tap0"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        time.sleep(2)
        request = '{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0","host_port":25,"guest_port":25}}'
        _run("ip", "netns", "exec", ns, "nc", "-U", "-q1", str(sock), input=request)
        (ROOTLESS / "slirp4netns_ss.txt").write_text(_run("ip", "netns", "exec", ns, "ss", "-Hltnp").stdout)
        return ROOTLESS
    finally:
        for p in procs:
            p.kill()
        for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", ns, check=False)


if __name__ == "__main__":
    import sys

    from tests.labhost import make_client_key

    key = make_client_key(Path(tempfile.mkdtemp(prefix="mcservices-")))
    for n in sys.argv[1:] or (*SCENARIOS, "rootless"):
        print(n, record_rootless() if n == "rootless" else record(n, key))
