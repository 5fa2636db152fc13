"""Check speed: a full Engine.check vs the guide run as a plain shell script.

On one lab host (network namespace, real sshd/exim/dovecot) whose mail ports
are all filtered (iptables and ip6tables DROP in INPUT), time:

  mailcheck  Engine.check(host): one SSH connection, two batches, every probe
             concurrent (IPv4 and IPv6, 5 ports each), timeout T per probe;
  guide      the guide's steps as a shell script: one `ssh` per command
             (lsof -i:25, lsof -i:143, systemctl status x2, ufw status,
             iptables -L, ip6tables -L), then `nc -vz -w T` per port and
             family, one after another.

Every mailcheck check runs all its steps with outbound on: lab mail servers on the
outside end of the host's link (25/465/587, open), a fake AWS metadata service on
169.254.169.254 inside the host (IMDSv2: the token round trip too), and a lab RDAP
server for the address's holder, so nothing is asked of the internet.

It also checks the probe budget (issue 15):

  bound      the all-filtered check against 1.3 x (T + one SSH round trip:
             connect and run `true` with mailcheck's own transport, same run);
  greeting   the same host with the filtered rule only on 143/993 and Exim
             behind a resolver that never answers (its reverse lookup of the
             prober delays every greeting by ~10 s, glibc's 5 s x 2): the
             filtered ports must still cost T, the connected ones their
             greeting delay D, the whole check about max(T, D), and no port the
             greeting budget (MAILCHECK_GREETING_TIMEOUT, 30 s).

Usage (root): python3 bench/check_speed.py [--timeout T] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.checks.outbound import read_nc_output  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.models import INBOUND_PORTS, Command  # noqa: E402
from bot.probes import Prober  # noqa: E402
from bot.transport import SSHTransport  # noqa: E402
from config.inventory import Host, Inventory  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests.labhost import make_client_key, make_host, missing_prerequisites  # noqa: E402
from tests.labowner import LabRegistry, rdap_network  # noqa: E402

METADATA = Path(__file__).resolve().parents[1] / "tests" / "labmetadata.py"

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


def _host(lab, key: Path) -> Host:
    return Host(name=f"mx{lab.index}", address=lab.ip, identity_file=key, known_hosts=lab.known_hosts)


def engine_check(lab, key: Path, timeout: float) -> tuple[float, dict]:
    elapsed, report = full_check(lab, key, timeout)
    return elapsed, {(p.family, p.port): p.outside for p in report.ports if p.direction == "inbound"}


def full_check(lab, key: Path, timeout: float, greeting: float = 30.0):
    """The whole check, outbound on (lab targets), the holder asked of a lab RDAP server."""
    async def run():
        holder = {lab.ip: rdap_network(lab.ip, "LAB-NET", "Lab Holder")}
        async with LabRegistry(lab.outside_ip, rdap=holder) as registry:
            o = lab.outside_ip
            settings = Settings(probe_timeout=timeout, greeting_timeout=greeting, _env_file=None,
                                outbound_targets=f"{o}:25, {o}:465, {o}:587",
                                rdap_url=registry.rdap_url, whois_server="off")
            t0 = time.monotonic()
            report = await Engine(settings, Inventory()).check(_host(lab, key))
            return time.monotonic() - t0, report

    with lab.outside_listener((25, 465, 587)):
        elapsed, report = asyncio.run(run())
    steps = {s.name: s.status for s in report.steps}
    assert "error" not in steps.values(), [(s.name, s.error) for s in report.steps if s.error]
    assert {p.outside for p in report.ports if p.direction == "outbound" and p.family == "ipv4"} == {"open"}
    assert any(f.code == "provider.identified" and "Amazon" in f.summary for f in report.findings)
    return elapsed, report


def ssh_round_trip(lab, key: Path) -> float:
    """Connect with mailcheck's transport, run `true`, close: one SSH round trip from nothing."""
    async def once() -> float:
        t0 = time.monotonic()
        transport = SSHTransport(_host(lab, key), Settings(_env_file=None))
        try:
            [r] = await transport.run([Command(("true",))])
            assert r.ok, r
        finally:
            await transport.close()
        return time.monotonic() - t0

    return asyncio.run(once())


def greeting_budget(lab, key: Path, timeout: float, runs: int) -> None:
    """Exim greets late (silent resolver); 143/993 filtered. Who waits for what?"""
    if lab.dns is not None:  # the host's own lab resolver on the same address
        lab.dns.close()
        lab.dns = None
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((lab.outside_ip, 53))  # takes the queries, never answers
    (lab.etc / "resolv.conf").write_text(f"nameserver {lab.outside_ip}\n")
    try:
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-F", "INPUT")
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "143,993", "-j", "DROP")
        lab.stop_exim()
        lab.start_exim("public")  # re-read resolv.conf
        rows = []
        for _ in range(runs):
            elapsed, report = full_check(lab, key, timeout)
            ports = [p for p in report.ports if p.direction == "inbound"]
            filtered = [p for p in ports if p.outside == "filtered"]
            slow = [p.greeting_time for p in ports if p.greeting_time is not None]
            assert len(filtered) == 4 and len(slow) == 6, [(p.port, p.outside, p.greeting_time) for p in ports]
            assert not any(f.code in ("smtp.bad_greeting", "tls.handshake_failed") for f in report.findings)
            assert sum(f.code == "port.slow_greeting" for f in report.findings) == 6
            assert any(f.code == "dns.resolver_delays_greeting" for f in report.findings)
            rows.append((elapsed, min(slow), max(slow), *probe_times(lab, timeout)))
    finally:
        dead.close()
    print(f"\ngreeting budget: exim behind a silent resolver, 143/993 filtered, T = {timeout:g}s, "
          "greeting budget 30 s")
    for elapsed, lo, hi, filtered, connected in rows:
        print(f"  check {elapsed:5.2f}s  greetings D {lo:5.2f}..{hi:5.2f}s  check / D {elapsed / hi:4.2f}  "
              f"check / (T + 30) {elapsed / (timeout + 30):4.2f} | probes alone: filtered ports "
              f"done at {filtered:4.2f}s (/ T {filtered / timeout:4.2f}), connected ports at "
              f"{connected:5.2f}s")


def probe_times(lab, timeout: float) -> tuple[float, float]:
    """The probes alone (both families at once): when the last filtered and the last connected
    port finished."""
    async def both():
        prober = Prober(timeout, 30.0)
        return await asyncio.gather(prober.probe("ipv4", lab.ip, INBOUND_PORTS),
                                    prober.probe("ipv6", lab.ip6, INBOUND_PORTS))

    probes = [p for r in asyncio.run(both()) for p in r.probes]
    return (max(p.elapsed for p in probes if p.state == "filtered"),
            max(p.elapsed for p in probes if p.state == "open"))


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
        lab.sh("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
        lab.popen("python3", str(METADATA), "aws", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "-m", "multiport",
                   "--dports", "25,465,587,143,993", "-j", "DROP")
        times = {"mailcheck": [], "guide": [], "ssh": []}
        for _ in range(args.runs):
            for name, fn in (("mailcheck", engine_check), ("guide", guide_script)):
                elapsed, verdicts = fn(lab, key, args.timeout)
                assert set(verdicts.values()) == {"filtered"}, (name, verdicts)
                times[name].append(elapsed)
            times["ssh"].append(ssh_round_trip(lab, key))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"probe timeout T = {args.timeout:g}s, {args.runs} runs, 10 filtered ports (5 x IPv4, IPv6)")
        for name, values in times.items():
            print(f"{name:10} median {med[name]:6.2f}s  runs: {', '.join(f'{v:.2f}' for v in values)}")
        print(f"ratio guide / mailcheck: {med['guide'] / med['mailcheck']:.1f}x")
        bound = [c / (args.timeout + r) for c, r in zip(times["mailcheck"], times["ssh"], strict=True)]
        print(f"mailcheck / (T + SSH round trip), per run: {', '.join(f'{b:.2f}' for b in bound)} "
              f"(goal <= 1.3)")
        greeting_budget(lab, key, args.timeout, args.runs)
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
