"""ConfigServer Firewall (CSF), the real Perl script, inside a lab host.

CSF has no Debian package, and its code stays out of this repository. The lab
runs a public snapshot of it when one is on this machine: the directory named
by MAILCHECK_CSF_SNAPSHOT, or /var/cache/mailcheck-lab/csf-9f3e24d (a `git
archive` of github.com/Black-HOST/csf at 9f3e24d3d49772e9610f002c33d5042a90de6cfc,
csf v15.03, the maintained continuation of ConfigServer's GPLv3 csf). Without a
snapshot the CSF lab tests say so and skip; the corpus keeps the rulesets and
outputs real CSF produced (tests/data/csf/), which every machine can replay.

Per host: /etc/csf is /etc/netns/mcN/csf (the generic csf.conf and its
companions, with the overrides a test asks for), /etc/crontab and /etc/cron.d
are the host's own (CSF edits them), and /usr/local/csf, /var/lib/csf and
/usr/local/sbin (holding `csf`) are bind-mounted from the host's workdir inside
a private mount namespace in which the host's sshd runs: `csf -v`, `csf -r`
over SSH are the host's CSF, as on a cPanel server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

DEFAULT_SNAPSHOT = Path("/var/cache/mailcheck-lab/csf-9f3e24d")
DATA = Path(__file__).parent / "data" / "csf"
LAB_RESOLVER = "198.18.250.53"  # LAB.md's DNS lab address (no query is sent in these tests)
# What real CSF printed and wrote, per recording (tests/data/csf/NAME/).
OUTPUTS = {"csf_-v.txt": ("-v",), "csf_-l.txt": ("-l",), "csf_-l6.txt": ("-l6",)}
# Safe in a lab: no self-update cron, no network fetches, no lfd daemon, no syslog checks.
LAB_OVERRIDES = {"AUTO_UPDATES": "0", "URLGET": "1", "LF_DAEMON": "0", "LFDSTART": "0",
                 "SYSLOG_CHECK": "0", "RESTRICT_SYSLOG": "3"}


def snapshot() -> Path | None:
    path = Path(os.environ.get("MAILCHECK_CSF_SNAPSHOT") or DEFAULT_SNAPSHOT)
    return path if (path / "csf.pl").exists() and (path / "lib" / "ConfigServer").is_dir() else None


def required_snapshot() -> Path:
    """The snapshot, or the test that needs it stops here: skipped with its reason (no Debian or
    PyPI package carries CSF, so a new machine cannot have it, even under
    MAILCHECK_LAB=required), failed when MAILCHECK_CSF=required (.ci/run)."""
    import pytest

    src = snapshot()
    if src is None:
        msg = (f"real CSF needs a snapshot of github.com/Black-HOST/csf (no package has it): "
               f"MAILCHECK_CSF_SNAPSHOT or {DEFAULT_SNAPSHOT}")
        if os.environ.get("MAILCHECK_CSF") == "required":
            pytest.fail(msg)
        pytest.skip(msg)
    return src


def set_options(conf: str, options: dict[str, str]) -> str:
    """csf.conf with KEY = "VALUE" lines replaced (every key must exist)."""
    for k, v in options.items():
        conf, n = re.subn(rf'^{re.escape(k)}\s*=\s*".*"[ \t]*$', f'{k} = "{v}"', conf, flags=re.M)
        if n != 1:
            raise KeyError(f"csf.conf has {n} lines for {k}")
    return conf


def get_option(conf: str, key: str) -> str:
    m = re.search(rf'^{re.escape(key)}\s*=\s*"(.*)"$', conf, flags=re.M)
    if not m:
        raise KeyError(key)
    return m.group(1)


def _remove_if_empty(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path):
            os.rmdir(path)
        elif os.path.getsize(path) == 0:
            os.remove(path)


class Csf:
    def __init__(self, host, src: Path):
        self.host, self.src = host, src
        self.usr = host.workdir / "csf-usr"
        self.var = host.workdir / "csf-var"

    @property
    def conf_path(self) -> Path:
        return self.host.etc / "csf" / "csf.conf"

    def install(self, **options: str) -> Csf:
        etc = self.host.etc / "csf"
        etc.mkdir(parents=True)
        conf = self.src / "etc" / "conf"
        for f in conf.glob("csf.*"):
            shutil.copy(f, etc / f.name)
        for name in ("csf.conf", "csf.allow", "csf.ignore", "csf.pignore"):
            shutil.copy(conf / "generic" / name, etc / name)
        shutil.copy(self.src / "version.txt", etc / "version.txt")
        self.conf_path.write_text(set_options(self.conf_path.read_text(), {**LAB_OVERRIDES, **options}))
        # TESTING mode adds "*/5 * * * * root /usr/sbin/csf -f" to /etc/crontab: the host's own.
        (self.host.etc / "cron.d").mkdir(exist_ok=True)
        (self.host.etc / "crontab").write_text("")
        (self.usr / "bin").mkdir(parents=True)
        shutil.copytree(self.src / "lib", self.usr / "lib")
        shutil.copytree(self.src / "tpl", self.usr / "tpl")
        for script in ("csf.pl", "lfd.pl", "regex.custom.pm", "csftest.pl"):
            shutil.copy(self.src / script, self.usr / "bin" / script)
        (self.var / "lock").mkdir(parents=True)
        # Empty mount points (ip netns exec binds /etc/netns/mcN/csf only over an existing
        # /etc/csf); removed again at close when no other host still has them mounted.
        for mountpoint in ("/etc/csf", "/usr/local/csf", "/var/lib/csf", "/etc/crontab"):
            if not Path(mountpoint).exists():
                if mountpoint == "/etc/crontab":
                    Path(mountpoint).touch()
                else:
                    Path(mountpoint).mkdir(parents=True)
                self.host.cleanups.insert(0, lambda m=mountpoint: _remove_if_empty(m))
        # CSF writes allow rules for each resolver in /etc/resolv.conf: a lab address, not the machine's.
        if not (self.host.etc / "resolv.conf").exists():
            (self.host.etc / "resolv.conf").write_text(f"nameserver {LAB_RESOLVER}\n")
        # The host's sshd runs in the mount namespace CSF's commands run in, where `csf` is on
        # PATH (/usr/local/sbin/csf -> csf.pl): SSH sessions see and run the host's CSF.
        (self.sbin).mkdir()
        (self.sbin / "csf").symlink_to("/usr/local/csf/bin/csf.pl")
        (self.usr / "bin" / "csf.pl").chmod(0o755)
        binds = " && ".join(f"mount --bind {src} {dst}" for src, dst in self.binds())
        self.host.sshd_prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                                 f'{binds} && exec "$@"', "sh"]
        self.host.restart_sshd()
        return self

    @property
    def sbin(self) -> Path:
        return self.host.workdir / "csf-sbin"

    def binds(self) -> list[tuple[Path, str]]:
        return [(self.usr, "/usr/local/csf"), (self.var, "/var/lib/csf"), (self.sbin, "/usr/local/sbin")]

    def cli(self, *args: str, check: bool = True, timeout: float = 120):
        """csf ARGS in the host, as its SSH sessions run it (in the sshd's mount namespace)."""
        r = self.host.session("csf", *args, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"csf {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def set(self, **options: str) -> None:
        self.conf_path.write_text(set_options(self.conf_path.read_text(), options))


# --- recordings: real CSF's outputs and rulesets, replayable without CSF -----------------------

RECORDINGS = {
    # name: (csf.conf options, csf commands after `csf -s`, description)
    "default_testing": ({}, (), "the generic csf.conf as shipped: TESTING=1, IPV6=0, mail ports in TCP_IN"),
    "tcp_in_no_mail": ({"TCP_IN": "20,21,22,53,80,110,443"}, (),
                       "TCP_IN without 25/465/587/143/993; IPV6=0 leaves IPv6 unfiltered"),
    "ipv6_tcp6_in_no_mail": ({"IPV6": "1", "TCP_IN": "20,21,22,53,80,110,443",
                              "TCP6_IN": "20,21,22,53,80,110,443"}, (),
                             "IPV6=1 with TCP6_IN and TCP_IN both without the mail ports"),
    "deny_prober": ({"TESTING": "0"}, (("-d", "{prober}", "lab deny"),),
                    "TESTING=0, the prober denied with `csf -d` (csf.deny, DENYIN)"),
}


def template_out(text: str, host) -> str:
    """Host-specific addresses -> the corpus placeholders."""
    for value, name in ((host.ip6, "{host6}"), (host.outside_ip6, "{prober6}"),
                        (host.ip, "{host}"), (host.outside_ip, "{prober}")):
        text = text.replace(value, name)
    return text


def record(name: str, client_key: Path) -> Path:
    from tests.firewall_corpus import start_listeners
    from tests.labhost import make_host

    options, commands, _ = RECORDINGS[name]
    host = make_host(client_key)
    try:
        start_listeners(host)
        csf = Csf(host, snapshot()).install(**options)
        outdir = DATA / name
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "csf_-s.txt").write_text(template_out(csf.cli("-s").stdout, host))
        for argv in commands:
            argv = tuple(a.replace("{prober}", host.outside_ip) for a in argv)
            (outdir / ("csf_" + "_".join(argv[:1]) + ".txt")).write_text(template_out(csf.cli(*argv).stdout, host))
        for fname, argv in OUTPUTS.items():
            (outdir / fname).write_text(template_out(csf.cli(*argv, check=False).stdout, host))
        for save, fname in (("iptables-save", "rules.v4"), ("ip6tables-save", "rules.v6")):
            text = host.sh(save).stdout
            (outdir / fname).write_text(template_out("\n".join(
                line for line in text.splitlines() if not line.startswith("#")) + "\n", host))
        (outdir / "crontab.txt").write_text((host.etc / "crontab").read_text())
        (outdir / "csf.conf.options").write_text("".join(f'{k} = "{v}"\n' for k, v in
                                                         {**LAB_OVERRIDES, **options}.items()))
        return outdir
    finally:
        host.close()


if __name__ == "__main__":
    import sys
    import tempfile

    from tests.labhost import make_client_key

    if snapshot() is None:
        sys.exit(f"no CSF snapshot: set MAILCHECK_CSF_SNAPSHOT or unpack one in {DEFAULT_SNAPSHOT}")
    key = make_client_key(Path(tempfile.mkdtemp(prefix="mccsf-")))
    for n in sys.argv[1:] or RECORDINGS:
        print(n, record(n, key))
