"""A Postfix mail host: a real Debian 12 userland with Postfix and Dovecot in a lab host.

On Debian, postfix and exim4 cannot be installed together, so the machine keeps
exim4 and the Postfix host runs from a cached debootstrap rootfs
(scripts/lab-rootfs postfix): an overlay (the cache read-only below, the host's
own changes above, under its workdir) used as the root of a chroot in private
mount and PID namespaces, inside the lab host's network namespace. Its own
/usr/sbin/sshd replaces the lab host's on port 22 with the same host key, so
mailcheck's SSH commands run *inside* it: `ss`, `ps`, `postconf`, `postfix
check`, /etc/postfix/master.cf, /var/log/mail.log and `doveconf` are the
real ones of a Postfix server, and its processes are the only ones `ps` shows.
Everything the namespaces mounted goes away with their processes.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.containerlab import rootfs, wait_for

# The init of the Postfix host (PID 1 of its PID namespace, run by chroot): sshd and
# dovecot as their Debian init scripts start them, then waits. Postfix is started by
# PostfixHost.start() once its configuration is written.
INIT = """#!/bin/sh
mkdir -p /run/sshd /run/dovecot /var/log
touch /var/log/mail.log
/usr/sbin/sshd -D -e -p 22 -h /etc/ssh/ssh_host_ed25519_key -o AuthorizedKeysFile=/etc/ssh/lab_authorized_keys \
  -o StrictModes=no -o UseDNS=no -o MaxSessions=10 2>>/var/log/sshd.log &
[ -e /etc/lab-no-dovecot ] || dovecot
exec sleep infinity
"""

# master.cf services, as Debian's master.cf has them (commented out) - enabled by start().
SUBMISSION = "submission/inet=submission inet n - y - - smtpd"
SMTPS = "smtps/inet=smtps inet n - y - - smtpd"
SMTPS_WRAPPER = "smtps/inet/smtpd_tls_wrappermode=yes"
POSTSCREEN = ("smtp/inet=smtp inet n - y - 1 postscreen",
              "smtpd/pass=smtpd pass - - y - - smtpd",
              "dnsblog/unix=dnsblog unix - - y - 0 dnsblog",
              "tlsproxy/unix=tlsproxy unix - - y - 0 tlsproxy")


@dataclass
class PostfixHost:
    host: object
    proc: subprocess.Popen | None = None

    @property
    def dir(self) -> Path:
        return self.host.workdir / "postfix-root"

    @property
    def root(self) -> Path:
        return self.dir / "merged"

    def start(self, *, submission: bool = True, smtps: bool = False, postscreen: bool = False,
              inet_interfaces: str = "all", main: dict[str, str] | None = None,
              postfix: bool = True, dovecot: bool = True) -> PostfixHost:
        """Boot the host with this Postfix configuration; returns once port 22 and SMTP listen."""
        lower = rootfs("postfix")
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._prepare_upper(lower, postfix=postfix, dovecot=dovecot)
        # The old sshd (the machine's) leaves port 22 to the Postfix host's own.
        self.host.stop_sshd()
        mounts = " && ".join([
            f"mount -t overlay overlay -o lowerdir={lower},upperdir={self.dir}/upper,workdir={self.dir}/work {self.root}",
            f"mount -t proc proc {self.root}/proc", f"mount --rbind /dev {self.root}/dev",
            f"mount -t sysfs sysfs {self.root}/sys", f"mount -t tmpfs tmpfs {self.root}/run",
            f"mount -t tmpfs tmpfs {self.root}/tmp",
            f"exec chroot {self.root} /usr/local/sbin/lab-init"])
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.host.ns, "unshare", "--pid", "--fork", "--mount",
             "--propagation", "private", "sh", "-c", mounts],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.host.workdir / "postfix-host.log", "w"), start_new_session=True)
        self.host.pids_started.append(self.proc.pid)
        self.host.cleanups.append(self.stop)
        wait_for(lambda: self._init_pid() is not None, 10, "the Postfix host did not start")
        self.configure(submission=submission, smtps=smtps, postscreen=postscreen,
                       inet_interfaces=inet_interfaces, main=main or {}, reload=False)
        if postfix:
            self.inside("postfix", "start")
        self.host.wait_listening({22, 25} if postfix else {22}, timeout=20)
        return self

    def _prepare_upper(self, lower: Path, *, postfix: bool, dovecot: bool) -> None:
        up = self.dir / "upper"
        for d in ("usr/local/sbin", "etc/ssh"):
            (up / d).mkdir(parents=True, exist_ok=True)
        init = up / "usr/local/sbin/lab-init"
        init.write_text(INIT)
        init.chmod(0o755)
        key = self.host.workdir / "ssh_host_ed25519_key"
        for src, dst in ((key, "ssh_host_ed25519_key"), (Path(f"{key}.pub"), "ssh_host_ed25519_key.pub"),
                         (self.host.workdir / "authorized_keys", "lab_authorized_keys")):
            (up / "etc/ssh" / dst).write_bytes(src.read_bytes())
        (up / "etc/ssh/ssh_host_ed25519_key").chmod(0o600)
        (up / "etc/mailname").write_text("mx.lab.test\n")
        (up / "etc/hostname").write_text("mx\n")
        # a lab resolver (nothing answers it: lookups fail fast instead of leaving the lab)
        (up / "etc/resolv.conf").write_text("nameserver 198.18.250.53\n")
        if not dovecot:
            (up / "etc" / "lab-no-dovecot").write_text("")

    def _init_pid(self) -> int | None:
        """The host pid of the Postfix host's PID 1 (the chrooted lab-init)."""
        if self.proc is None:
            return None
        for pid in self.host.pids():
            try:
                if Path(f"/proc/{pid}/root").resolve() == self.root.resolve() and \
                        Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
                    return pid
            except OSError:
                continue
        return None

    def inside(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """argv inside the Postfix host (its namespaces, its root): the rootfs' programs, which
        scripts/lab-rootfs installs (not this machine's, so not in tests/labhost.py REQUIRED)."""
        pid = self._init_pid()
        r = subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "-n", "chroot", str(self.root), *argv],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def configure(self, *, submission: bool, smtps: bool, postscreen: bool, inet_interfaces: str,
                  main: dict[str, str], reload: bool = True) -> None:
        """main.cf and master.cf through postconf, as an administrator edits them."""
        settings = {"myhostname": "mx.lab.test", "maillog_file": "/var/log/mail.log",
                    "inet_interfaces": inet_interfaces,
                    "inet_protocols": "all", **main}
        self.inside("postconf", "-e", *(f"{k}={v}" for k, v in settings.items()))
        if submission:
            self.inside("postconf", "-M", SUBMISSION)
        if smtps:
            self.inside("postconf", "-M", SMTPS)
            self.inside("postconf", "-P", SMTPS_WRAPPER)
        if postscreen:
            for entry in POSTSCREEN:
                self.inside("postconf", "-M", entry)
        if reload:  # inet_interfaces needs a stop and start (`postfix reload` keeps the sockets)
            self.inside("postfix", "stop")
            self.inside("postfix", "start")

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self._init_pid()
        if pid is not None:
            self.inside("postfix", "stop", check=False)
        self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None

    def banner(self, port: int = 25, wait: float = 10.0) -> list[tuple[float, str]]:
        """(seconds after connect, line) the server sends before the client speaks, until a final
        '220 ' line or `wait`: postscreen's '220-' comes first, its '220 ' after greet_wait."""
        import socket

        lines: list[tuple[float, str]] = []
        buf = b""
        start = time.monotonic()
        with socket.create_connection((self.host.ip, port), timeout=wait) as s:
            while time.monotonic() - start < wait and not (lines and lines[-1][1][3:4] == " "):
                s.settimeout(max(0.1, wait - (time.monotonic() - start)))
                try:
                    chunk = s.recv(512)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    lines.append((round(time.monotonic() - start, 1), line.decode(errors="replace")))
        return lines


# --- recordings for unit tests: what a Postfix host shows mailcheck ------------------------------

DATA = Path(__file__).parent / "data" / "postfix"
RECORD_COMMANDS = (
    ("ss", "-Hltnp"), ("ps", "-eo", "pid,ppid,comm,args"),
    ("postconf", "-n"), ("postconf", "-h", "inet_interfaces", "inet_protocols"), ("postconf", "-M"),
    ("cat", "/etc/postfix/master.cf"), ("postfix", "check"), ("postfix", "status"),
    ("tail", "-n", "30", "/var/log/mail.log"), ("doveconf", "-h", "listen", "protocols"), ("doveconf", "-n"),
    ("cat", "/etc/os-release"),
)
RECORDINGS = {
    "default_submission": dict(submission=True),
    "no_submission": dict(submission=False),
    "smtps_and_submission": dict(submission=True, smtps=True),
    "postscreen": dict(submission=True, postscreen=True),
    "loopback_only": dict(submission=True, inet_interfaces="loopback-only"),
}


def record(name: str, client_key: Path) -> Path:
    import json

    from tests.labhost import make_host

    host = make_host(client_key)
    try:
        pf = PostfixHost(host).start(**RECORDINGS[name])
        out = DATA / name
        out.mkdir(parents=True, exist_ok=True)
        outside = {p: host.probe(p) for p in (25, 465, 587, 143, 993)}
        banners = {p: pf.banner(p) for p, o in outside.items() if o == "open" and p in (25, 587)}
        index = []
        for argv in RECORD_COMMANDS:
            r = pf.inside(*argv, check=False)
            fname = "_".join(a.strip("/").replace("/", "_") for a in argv) + ".txt"
            (out / fname).write_text(r.stdout.replace(host.ip, "{host}").replace(host.outside_ip, "{prober}"))
            index.append({"file": fname, "argv": list(argv), "exit_status": r.returncode, "stderr": r.stderr})
        (out / "commands.json").write_text(json.dumps(index, indent=1) + "\n")
        (out / "outside.json").write_text(json.dumps(
            {"outcomes": {str(p): o for p, o in outside.items()},
             "banners": {str(p): b for p, b in banners.items()}}, indent=1) + "\n")
        return out
    finally:
        host.close()


if __name__ == "__main__":
    import sys
    import tempfile

    from tests.labhost import make_client_key

    key = make_client_key(Path(tempfile.mkdtemp(prefix="mcpostfix-")))
    for n in sys.argv[1:] or RECORDINGS:
        print(n, record(n, key))
