"""Check speed: a full Engine.check vs the guide run as a plain shell script, and
what the DNS steps add to it.

On one lab host (network namespace, real sshd/exim/dovecot) whose mail ports
are all filtered (iptables and ip6tables DROP in INPUT), attached to the DNS lab
(tests/dnslab.py: its resolver is the host's and mailcheck's), time, in each round:

  ssh        the SSH steps alone (tools, services, firewall): connect and the
             round trips, no probe, no DNS: "the SSH round trip";
  no-dns     Engine.check(host) without the dns and reputation steps: one SSH
             connection, every probe concurrent (IPv4 and IPv6, 5 ports each),
             timeout T per probe;
  dns        the full Engine.check(host), dns and reputation included: the
             host's domain (example.test: MX, SPF, DMARC, PTR in the lab),
             its addresses in three lab DNSBL zones, lookups concurrent with
             SSH and the probes;
  dns-silent the same with MAILCHECK_RESOLVERS a lab address nobody answers
             at and MAILCHECK_DNS_TIMEOUT = T: one resolver timeout at most;
  guide      the guide's steps as a shell script: one `ssh` per command
             (lsof -i:25, lsof -i:143, systemctl status x2, ufw status,
             iptables -L, ip6tables -L), then `nc -vz -w T` per port and
             family, one after another.

Every mailcheck run but `ssh` has all its steps on, with lab stand-ins for the outside
world: outbound targets on the outside end of the host's link (25/465/587, open), a fake
AWS metadata service on 169.254.169.254 inside the host (IMDSv2: the token round trip
too), and a lab RDAP server for the address's holder; nothing is asked of the internet.

The bound (issues 12 and 15): dns <= 1.3 x (T + ssh), compared within each round.

Then the greeting budget (issue 15): the same host with the filtered rule only on
143/993 and Exim behind a resolver that never answers (its reverse lookup of the
prober delays every greeting by ~10 s, glibc's 5 s x 2): the filtered ports must still
cost T, the connected ones their greeting delay D, the whole check about max(T, D),
and no port the greeting budget (MAILCHECK_GREETING_TIMEOUT, 30 s).

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
from bot.checks.registry import all_checks  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.models import INBOUND_PORTS  # noqa: E402
from bot.probes import Prober  # noqa: E402
from config.inventory import Host, Inventory  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests import dnslab  # noqa: E402
from tests.lab.dnsworld import ptr_zone, world  # noqa: E402
from tests.labhost import make_client_key, make_host, missing_prerequisites  # noqa: E402
from tests.labowner import LabRegistry, rdap_network  # noqa: E402

METADATA = Path(__file__).resolve().parents[1] / "tests" / "labmetadata.py"

DOMAIN = "example.test"
SSH_STEPS = ("tools", "services", "firewall")

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


def engine_check(lab, key: Path, timeout: float, mode: str, dns: dnslab.DnsLab) -> tuple[float, dict | None]:
    elapsed, report = full_check(lab, key, timeout, mode, dns)
    steps = {s.name: s for s in report.steps}
    if mode == "dns":  # the lab answered: real conclusions, no lookup failed
        assert steps["dns"].summary.startswith(f"{DOMAIN}: ") and "lookup_failed" not in steps["dns"].summary, \
            steps["dns"].summary
        assert "not listed" in steps["reputation"].summary, steps["reputation"].summary
    if mode == "dns-silent":
        assert "lookup_failed" in steps["dns"].summary, steps["dns"].summary
    verdicts = {(p.family, p.port): p.outside for p in report.ports if p.direction == "inbound"}
    return elapsed, verdicts if mode != "ssh" else None  # no probe in the SSH-only run


def full_check(lab, key: Path, timeout: float, mode: str, dns: dnslab.DnsLab):
    """One Engine.check in `mode`; outside the `ssh` mode, outbound on (lab targets), the
    holder asked of a lab RDAP server, the metadata of the lab's fake AWS service."""
    silent = f"198.18.{dns.index}.99"  # routed to the DNS lab, where no one has it: no answer
    checks = {"ssh": [c for c in all_checks() if c.name in SSH_STEPS],
              "no-dns": [c for c in all_checks() if c.name not in ("dns", "reputation")]}.get(mode)
    host = Host(name=f"mx{lab.index}", address=lab.ip, identity_file=key, known_hosts=lab.known_hosts,
                domains=[DOMAIN])
    o = lab.outside_ip

    async def run():
        async with LabRegistry(o, rdap={lab.ip: rdap_network(lab.ip, "LAB-NET", "Lab Holder")}) as registry:
            settings = Settings(_env_file=None, probe_timeout=timeout,
                                dns_timeout=timeout if mode == "dns-silent" else 3,
                                resolvers=silent if mode == "dns-silent" else dns.resolver,
                                dnsbl_zones="bl.test,bl2.test,bl3.test", ca_file=dns.ca_file,
                                outbound_targets=f"{o}:25, {o}:465, {o}:587",
                                rdap_url=registry.rdap_url, whois_server="off")
            t0 = time.monotonic()
            report = await Engine(settings, Inventory(), checks=checks).check(host)
            return time.monotonic() - t0, report

    with lab.outside_listener((25, 465, 587)):
        elapsed, report = asyncio.run(run())
    assert not [s for s in report.steps if s.status == "error"], [(s.name, s.error) for s in report.steps]
    if mode != "ssh":
        assert {p.outside for p in report.ports if p.direction == "outbound" and p.family == "ipv4"} == {"open"}
        assert any(f.code == "provider.identified" and "Amazon" in f.summary for f in report.findings)
    return elapsed, report


def dns_world(dns: dnslab.DnsLab, lab) -> None:
    zone = dnslab.Zone(DOMAIN, f"@ MX 10 mail\nmail A {lab.ip}\nmail AAAA {lab.ip6}\n"
                               '@ TXT "v=spf1 mx -all"\n_dmarc TXT "v=DMARC1; p=reject"', signed=False)
    zones = {z: dict(dnslab.TEST_ENTRIES) for z in ("bl.test", "bl2.test", "bl3.test")}
    world(dns, zone, ptr_zone(lab.ip, f"mail.{DOMAIN}"), ptr_zone(lab.ip6, f"mail.{DOMAIN}"), dnsbl=zones)


def greeting_budget(lab, key: Path, timeout: float, runs: int, dns: dnslab.DnsLab) -> list[tuple]:
    """Exim greets late (silent resolver); 143/993 filtered. Who waits for what?"""
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
            elapsed, report = full_check(lab, key, timeout, "dns", dns)
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
    return rows


def greeting_report(rows: list[tuple], timeout: float) -> None:
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


MODES = ("ssh", "no-dns", "dns", "dns-silent", "guide")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=4.0, help="probe / nc -w timeout (s)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if missing := missing_prerequisites() + dnslab.missing_prerequisites():
        print("needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    key = make_client_key(Path(tempfile.mkdtemp(prefix="mailcheck-bench-")))
    dns = dnslab.DnsLab().start()
    lab = None
    try:
        lab = make_host(key, resolver=dns.resolver)
        dns.attach(lab)
        dns_world(dns, lab)
        lab.start_exim("public")
        lab.start_dovecot(tls=True)
        lab.sh("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
        lab.popen("python3", str(METADATA), "aws", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for tool in ("iptables", "ip6tables"):
            lab.sh(tool, "-A", "INPUT", "-p", "tcp", "-m", "multiport",
                   "--dports", "25,465,587,143,993", "-j", "DROP")
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                if mode == "guide":
                    elapsed, verdicts = guide_script(lab, key, args.timeout)
                else:
                    elapsed, verdicts = engine_check(lab, key, args.timeout, mode, dns)
                assert verdicts is None or set(verdicts.values()) == {"filtered"}, (mode, verdicts)
                times[mode].append(elapsed)
        rows = greeting_budget(lab, key, args.timeout, args.runs, dns)
    finally:
        if lab is not None:
            lab.close()
        dns.close()
    report(times, args.timeout, args.runs)
    greeting_report(rows, args.timeout)
    return 0


def report(times: dict[str, list[float]], timeout: float, runs: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"probe timeout T = {timeout:g}s, {runs} runs, 10 filtered ports (5 x IPv4, IPv6)")
    for name, values in times.items():
        print(f"{name:10} median {med[name]:6.2f}s  runs: {', '.join(f'{v:.2f}' for v in values)}")
    ratios = [d / (timeout + s) for d, s in zip(times["dns"], times["ssh"], strict=True)]
    silent = [d / (timeout + s) for d, s in zip(times["dns-silent"], times["ssh"], strict=True)]
    print(f"dns / (T + ssh), per round: {', '.join(f'{r:.2f}' for r in ratios)} (bound 1.30)")
    print(f"dns-silent / (T + ssh), per round: {', '.join(f'{r:.2f}' for r in silent)}")
    print(f"dns - no-dns, per round: "
          f"{', '.join(f'{d - n:+.2f}s' for d, n in zip(times['dns'], times['no-dns'], strict=True))}")
    print(f"ratio guide / mailcheck (dns): {med['guide'] / med['dns']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
