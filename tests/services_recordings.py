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
        exim.sh("dovecot")
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


def write(out: Path, results: list, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
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
        results = asyncio.run(collect(host))
        outside = {f"{fam}/{p}": host.probe(p, six=fam == "ipv6") for fam in ("ipv4", "ipv6") for p in PORTS}
        meta = {"addresses": {"ipv4": host.ip, "ipv6": host.ip6},
                "sources": {"ipv4": host.outside_ip, "ipv6": host.outside_ip6}, "outside": outside}
        out = DATA / name
        write(out, results, meta)
        return out
    finally:
        host.close()


if __name__ == "__main__":
    import sys
    import tempfile

    from tests.labhost import make_client_key

    key = make_client_key(Path(tempfile.mkdtemp(prefix="mcservices-")))
    for n in sys.argv[1:] or SCENARIOS:
        print(n, record(n, key))
