"""A lab host whose PID 1 is systemd (issue 10, item 5: the guard's systemd-run path).

The lab machine's own PID 1 is not systemd, so a plain LabHost only ever takes the guard's
`setsid -f` fallback. SystemdHost boots Debian 12's real systemd (with logind, D-Bus, sshd
and sudo: `scripts/lab-rootfs systemd`) in a podman container that shares a LabHost's
network namespace: its sshd listens on the host's address (port 2222, the LabHost's own
sshd keeps 22), and its iptables are the LabHost's netfilter, so `LabHost.rules()` reads
what the container changes. logind runs with KillUserProcesses=yes, and the login is the
non-root user `mc` with passwordless sudo: when the SSH session ends, logind kills every
process left in it, which is the case the guard exists for.

Podman keeps its state under the LabHost's workdir, the rootfs is mounted as an overlay
(`:O`, the cached rootfs is never written), and the container goes with the host.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.containerlab import podman_state, rootfs, unmount_under
from tests.labhost import _run

PORT = 2222
USER = "mc"

SETUP = r"""set -e
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
printf 'Port %s\nHostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\nUsePAM yes\n' "$2" \
    >/etc/ssh/sshd_config.d/lab.conf
mkdir -p /etc/systemd/logind.conf.d
printf '[Login]\nKillUserProcesses=yes\n' >/etc/systemd/logind.conf.d/lab.conf
useradd -m -s /bin/sh mc
install -d -m 700 -o mc -g mc /home/mc/.ssh
printf '%s\n' "$1" >/home/mc/.ssh/authorized_keys
chown mc:mc /home/mc/.ssh/authorized_keys
echo 'mc ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/mc
chmod 440 /etc/sudoers.d/mc
echo "127.0.1.1 $(hostname)" >>/etc/hosts
# No user manager (user@.service): the guard is a system timer and logind kills a session's
# processes through its scope, so neither needs one. In a container it is trouble: where
# podman runs nested (the fresh-machine check), it cannot make its cgroup ("Failed to
# allocate manager object") and every login waits on its start job past mailcheck's
# timeouts; here its stop after the last session never finished and the next login waited
# for it (seen: > 90 s). Masked, logind starts none and logins are immediate.
systemctl mask user@.service
systemctl restart systemd-logind
systemctl reset-failed ssh  # it failed at boot: no host key yet
systemctl restart ssh
"""


@dataclass
class SystemdHost:
    host: object  # the LabHost whose network namespace the container shares
    client_key: Path
    name: str = ""
    env: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.host.workdir / "systemd"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def start(self) -> SystemdHost:
        self.env = podman_state(self.dir)
        self.name = f"mclab-systemd-{self.host.index}"
        self.host.cleanups.append(self.stop)
        self.podman("run", "-d", "--name", self.name, "--network", f"ns:/run/netns/{self.host.ns}",
                    "--systemd=always", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
                    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                    "--rootfs", f"{rootfs('systemd')}:O", "/lib/systemd/systemd")
        self._wait_booted()
        pub = Path(f"{self.client_key}.pub").read_text().strip()
        self.exec("sh", "-c", SETUP, "sh", pub, str(PORT))
        hostkey = " ".join(self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
        self.known_hosts.write_text(f"[{self.host.ip}]:{PORT} {hostkey}\n")
        self.host.wait_listening({PORT})
        return self

    def _wait_booted(self, within: float = 90) -> None:
        deadline = time.monotonic() + within
        state = ""
        while time.monotonic() < deadline:
            state = self.exec("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"systemd in {self.name} did not come up within {within:.0f}s ({state!r})")

    def podman(self, *args: str, check: bool = True, timeout: float = 120):
        return _run("podman", *args, check=check, timeout=timeout, env={**os.environ, **self.env})

    def exec(self, *argv: str, check: bool = True, timeout: float = 60):
        """Run argv as root in the container (its filesystem, its systemd)."""
        return self.podman("exec", self.name, *argv, check=check, timeout=timeout)

    def exists(self, pattern: str) -> bool:
        """A path matching the shell glob `pattern` exists in the container."""
        return self.exec("sh", "-c", f"ls -d {pattern}", check=False).returncode == 0

    def diagnostics(self) -> str:
        """What systemd in the container is doing: its pending jobs, sessions and the journal's end."""
        out = [self.exec(*argv, check=False).stdout for argv in (
            ("systemctl", "list-jobs", "--no-pager"), ("loginctl", "list-sessions", "--no-legend"),
            ("journalctl", "-b", "--no-pager", "-n", "40"), ("ps", "-eo", "etimes=,args=", "--sort=start_time"))]
        return "\n".join(out)

    def running(self, *argv: str) -> bool:
        """A process with exactly this command line runs in the container."""
        want = " ".join(argv)
        out = self.exec("ps", "-eo", "args=", check=False).stdout
        return any(line.strip() == want for line in out.splitlines())

    def stop(self) -> None:
        if not self.env:
            return
        for _ in range(2):  # under load a removal can time out; its overlay must not stay mounted
            with contextlib.suppress(Exception):
                if self.podman("rm", "-f", "-t", "2", self.name, check=False, timeout=90).returncode == 0:
                    break
        unmount_under(self.dir)
        self.env = {}


# --- a mailcheck that dies in the middle of an apply (run as `python -m tests.systemdlab`) ----

DROP_25 = ["-p", "tcp", "--dport", "25", "-j", "DROP"]
SLEEP = 20  # the fix's last step: long enough for the test to kill mailcheck while it runs


async def apply_slowly(args: dict) -> None:
    """Apply a guarded iptables fix that removes the port-25 DROP rule and then sleeps, as
    user `mc` with sudo; the test kills this process during the sleep."""
    from bot.fixes import FixService
    from bot.models import Actor, BackupSpec, Fix, Report
    from bot.store import SQLiteStore
    from bot.transport import SSHTransport
    from config.inventory import Host, Inventory
    from config.settings import Settings

    settings = Settings(_env_file=None, db_path=args["db"], backup_dir="/var/backups/mailcheck",
                        connect_timeout=3.0, command_timeout=5.0, lockout_deadline=15, lock_wait=1.0)
    host = Host(name="mx-systemd", address=args["ip"], port=PORT, user=USER, sudo=True,
                identity_file=args["key"], known_hosts=args["known_hosts"], approvers=["UOPS"])
    fix = Fix(id="slow", kind="firewall", backend="iptables", summary="open 25, slowly",
              backup=BackupSpec(rulesets=["iptables"], guard=True), timeout=SLEEP + 3,
              commands=[["sh", "-c", f"iptables -D INPUT {' '.join(DROP_25)} && sleep {SLEEP}"]])
    inventory = Inventory.model_validate({"hosts": {host.name: host.model_dump()}})
    svc = FixService(settings=settings, inventory=inventory, store=SQLiteStore(settings.db_path),
                     connect=lambda h: SSHTransport(h, settings))
    report = Report(host=host.name, address=host.address, fixes=[fix])
    plan_id = (await svc.register(report, Actor("slack", "UREQ"), "CLAB"))[fix.id]
    print("deadline", svc.applier.deadline(fix), flush=True)
    outcome = await svc.apply(plan_id, Actor("slack", "UOPS"))
    print("the apply ended before it was killed:", outcome.status, outcome.message, flush=True)


if __name__ == "__main__":
    import asyncio
    import json
    import sys

    asyncio.run(apply_slowly(json.loads(sys.argv[1])))
