"""Check speed: a full Engine.check vs the guide run as a plain shell script.

On one lab host (network namespace, real sshd/exim/dovecot) whose mail ports
are all filtered (iptables and ip6tables DROP in INPUT), time:

  mailcheck  Engine.check(host): one SSH connection, two batches, every probe
             concurrent (IPv4 and IPv6, 5 ports each), timeout T per probe;
  guide      the guide's steps as a shell script: one `ssh` per command
             (lsof -i:25, lsof -i:143, systemctl status x2, ufw status,
             iptables -L, ip6tables -L), then `nc -vz -w T` per port and
             family, one after another.

Usage (root): python3 bench/check_speed.py [--timeout T] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.checks.ports import read_nc_output  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.models import INBOUND_PORTS  # noqa: E402
from config.inventory import Host, Inventory  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests.labhost import make_client_key, make_host, missing_prerequisites  # noqa: E402

GUIDE_COMMANDS = (["lsof", "-i:25"], ["lsof", "-i:143"], ["systemctl", "status", "exim4"],
                  ["systemctl", "status", "dovecot"], ["ufw", "status"],
                  ["iptables", "-L", "-v", "-n", "--line-numbers"],
                  ["ip6tables", "-L", "-v", "-n", "--line-numbers"])


def guide_script(lab, key: Path, timeout: float) -> tuple[float, dict]:
    ssh = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{lab.ip}"]
    t0 = time.monotonic()
    for cmd in GUIDE_COMMANDS:
        subprocess.run(ssh + cmd, capture_output=True, timeout=60)
    verdicts = {}
    for family, addr in (("ipv4", lab.ip), ("ipv6", lab.ip6)):
        for port in INBOUND_PORTS:
            r = subprocess.run(["nc", "-vz", "-w", f"{timeout:g}", addr, str(port)],
                               capture_output=True, text=True, timeout=60)
            verdicts[(family, port)] = read_nc_output(r.stderr + r.stdout, r.returncode)
    return time.monotonic() - t0, verdicts


def engine_check(lab, key: Path, timeout: float) -> tuple[float, dict]:
    settings = Settings(probe_timeout=timeout, _env_file=None)
    host = Host(name=f"mx{lab.index}", address=lab.ip, identity_file=key, known_hosts=lab.known_hosts)
    t0 = time.monotonic()
    report = asyncio.run(Engine(settings, Inventory()).check(host))
    verdicts = {(p.family, p.port): p.outside for p in report.ports if p.direction == "inbound"}
    return time.monotonic() - t0, verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=4.0, help="probe / nc -w timeout (s)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if missing := missing_prerequisites():
        print("needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    key = make_client_key(Path(tempfile.mkdtemp(prefix="mailcheck-bench-")))
    lab = make_host(key)
    try:
        lab.start_exim("public")
        lab.start_dovecot(tls=True)
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "-m", "multiport",
                   "--dports", "25,465,587,143,993", "-j", "DROP")
        times = {"mailcheck": [], "guide": []}
        for _ in range(args.runs):
            for name, fn in (("mailcheck", engine_check), ("guide", guide_script)):
                elapsed, verdicts = fn(lab, key, args.timeout)
                assert set(verdicts.values()) == {"filtered"}, (name, verdicts)
                times[name].append(elapsed)
    finally:
        lab.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"probe timeout T = {args.timeout:g}s, {args.runs} runs, 10 filtered ports (5 x IPv4, IPv6)")
    for name, values in times.items():
        print(f"{name:10} median {med[name]:6.2f}s  runs: {', '.join(f'{v:.2f}' for v in values)}")
    print(f"ratio guide / mailcheck: {med['guide'] / med['mailcheck']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
