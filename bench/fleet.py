"""The fleet lab: `mailcheck check all` on 50 lab hosts, and Ansible on the same hosts.

Builds a fleet (tests/fleetlab.py: namespaces with sshd, Exim/Dovecot on some, firewalls
open, guide case 1/2, ufw, nft; a dead host, a slow one whose iptables-save sleeps
--slow s) and a DNS lab serving its names (tests/dnslab.py; mailcheck's DNS and reputation
steps ask it, MAILCHECK_RESOLVERS...), then per run:

  singles    each host checked alone, one after another (mailcheck's Engine in a child
             process): the slowest single check S, and the CPU one check costs, on this
             machine (mailcheck's process) and on the host (its processes' CPU, read from
             /proc); per-host overhead o = that CPU / the cores, as 50 hosts share them
  mailcheck  `mailcheck check all --json` (a child with a soft fd limit of 1024): wall time,
             peak RSS (exact, from wait4) and sampled fds; each host's verdict compared with
             its single check; the claim: wall <= 1.5 x S + hosts x o
  ansible    ansible-playbook -f 5 and -f 50 running the same read-only commands
             (bench/ansible_fleet.py): wall time, peak RSS and PSS of its process tree

Usage (root): python -m bench.fleet [--hosts 50] [--runs 3] [--slow 6] [--no-ansible]
              [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ansible_fleet
from bench.procwatch import Watch
from tests.dnslab import DnsLab
from tests.fleetlab import dns_world, fleet_of, large_fleet
from tests.labhost import make_client_key, make_host, missing_prerequisites

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
LAB_ENV: dict[str, str] = {}  # MAILCHECK_* settings pointing mailcheck at the DNS lab


def mailcheck_env(inventory: Path) -> dict[str, str]:
    """This environment without its MAILCHECK_* settings, plus the lab's and the inventory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCHECK_")}
    return {**env, **LAB_ENV, "MAILCHECK_INVENTORY": str(inventory)}


def namespace_cpu(fleet) -> float:
    """CPU seconds of every process in the fleet's namespaces (with their reaped children)."""
    total = 0
    for lab, _ in fleet.hosts:
        for pid in lab.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            except (OSError, ValueError):
                continue
    return total / TICK


def singles_child(inventory: Path) -> None:
    """(in a child) each inventory host checked alone, in order; JSON on stdout."""
    from bot.engine import Engine
    from config.inventory import load_inventory
    from config.settings import Settings

    inv = load_inventory(inventory)
    engine = Engine(Settings(_env_file=None), inv)
    out = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    for name, host in inv.hosts.items():
        t0 = time.monotonic()
        report = asyncio.run(engine.check(host))
        out[name] = {"seconds": time.monotonic() - t0, "verdict": report.verdict}
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # imports excluded
    print(json.dumps({"hosts": out, "cpu": cpu}))


def singles(fleet, inventory: Path) -> dict:
    host_cpu = namespace_cpu(fleet)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.fleet", "--singles", str(inventory)],
                            cwd=ROOT, env=mailcheck_env(inventory), stdout=subprocess.PIPE, text=True)
    child = json.loads(proc.stdout.read())
    proc.wait()
    hosts, client_cpu = child["hosts"], child["cpu"]
    host_cpu = namespace_cpu(fleet) - host_cpu
    checked = [n for n, h in hosts.items() if h["verdict"] != "error"]
    return {"hosts": hosts, "wall": time.monotonic() - t0, "client_cpu": client_cpu,
            "host_cpu": host_cpu, "slowest": max(h["seconds"] for h in hosts.values()),
            "overhead": (client_cpu + host_cpu) / max(1, len(checked)) / CORES,
            "client_overhead": client_cpu / max(1, len(checked)) / CORES}


def mailcheck_fleet(fleet, inventory: Path, workdir: Path) -> dict:
    env = mailcheck_env(inventory)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    host_cpu = namespace_cpu(fleet)
    out, err = workdir / "mailcheck.jsonl", workdir / "mailcheck.err"
    t0 = time.monotonic()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "check", "all", "--json"], cwd=ROOT, env=env,
            stdout=fo, stderr=fe,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
        with Watch(proc.pid) as watch:
            _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    return {"wall": wall, "exit": os.waitstatus_to_exitcode(status), "peak_rss": usage.ru_maxrss * 1024,
            "sampled_rss": watch.peaks.rss, "pss": watch.peaks.pss, "fds": watch.peaks.fds,
            "cpu": usage.ru_utime + usage.ru_stime, "host_cpu": namespace_cpu(fleet) - host_cpu,
            "verdicts": {r["host"]: r["verdict"] for r in reports},
            "order": [r["host"] for r in reports], "stderr": err.read_text().splitlines()}


def single_process_rss(inventory: Path, name: str) -> int:
    """Peak RSS of `mailcheck check NAME` (one host): the fleet's baseline."""
    env = mailcheck_env(inventory)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "check", name, "--json"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.wait4(proc.pid, 0)[2].ru_maxrss * 1024


def declared_commands(fleet, settings_timeout: float = 20.0):
    """What mailcheck runs on a host: the facts batch, then every step's commands for the
    facts of the fleet's first live host (the registry's checks, as bot/gather.py builds it)."""
    from bot.checks import facts
    from bot.checks.registry import all_checks
    from bot.gather import Gather
    from bot.models import CommandResult

    lab = next(lab for lab, kind in fleet.hosts if not kind.dead and not kind.slow)
    results = {}
    for cmd in facts.commands():
        r = lab.sh(*cmd.argv, check=False)
        results[cmd.argv] = CommandResult(cmd, r.returncode, r.stdout, r.stderr)
    gather = Gather(None, all_checks(), connect=None, prober=None, command_timeout=settings_timeout)
    gather.facts = facts.read_facts(results)
    return facts.commands() + gather.commands()


def lab_costs(fleet, build_alone: list[float]) -> dict:
    """What a lab host costs: building one alone, the fleet's build, and memory per daemon."""
    by_comm: dict[str, list[int]] = {}
    for lab, _ in fleet.hosts:
        for pid in lab.pids():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                continue
            by_comm.setdefault(comm, []).append(rss)
    me = Path("/proc/self/status").read_text()
    return {"build_alone": build_alone, "fleet_build": fleet.build_seconds, "hosts": len(fleet.hosts),
            "rss_by_program": {c: (len(v), sum(v)) for c, v in sorted(by_comm.items())},
            "bench_threads": int(next(x for x in me.splitlines() if x.startswith("Threads:")).split()[1]),
            "bench_fds": len(os.listdir("/proc/self/fd"))}


def build_one_alone(key: Path) -> float:
    t0 = time.monotonic()
    lab = make_host(key)
    seconds = time.monotonic() - t0
    lab.close()
    return seconds


def one_run(fleet, inventory: Path, workdir: Path, ansible: tuple | None) -> dict:
    run: dict = {"load_before": os.getloadavg()}
    run["singles"] = singles(fleet, inventory)
    run["mailcheck"] = mailcheck_fleet(fleet, inventory, workdir)
    if ansible is not None:
        playbook_bin, inv, play = ansible
        for forks in (5, 50):
            wall, peaks, recap = ansible_fleet.run(playbook_bin, inv, play, forks, workdir)
            run[f"ansible{forks}"] = {"wall": wall, "sampled_rss": peaks.rss, "pss": peaks.pss,
                                      "fds": peaks.fds, "processes": peaks.processes, "recap": recap}
    run["load_after"] = os.getloadavg()
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slow", type=float, default=6.0, help="seconds the slow host's iptables-save takes")
    ap.add_argument("--no-ansible", action="store_true")
    ap.add_argument("--concurrency", type=int, help="MAILCHECK_FLEET_CONCURRENCY for the fleet run "
                    "(default: mailcheck's, 50); the lab's hosts share this machine's CPU")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mailcheck-bench-fleet.json"))
    ap.add_argument("--singles", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.singles:
        singles_child(args.singles)
        return 0
    if missing := missing_prerequisites():
        print("needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mailcheck-bench-fleet-"))
    try:
        return bench(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench(args: argparse.Namespace, workdir: Path) -> int:
    key = make_client_key(workdir)
    playbook_bin = None if args.no_ansible else ansible_fleet.ensure_ansible()
    alone = [build_one_alone(key) for _ in range(3)]
    result: dict = {"machine": {"cores": CORES, "python": sys.version.split()[0]}, "runs": []}
    dnslab = DnsLab().start()
    try:
        with fleet_of(key, large_fleet(args.hosts, args.slow)) as fleet:
            LAB_ENV.update(dns_world(fleet, dnslab))
            if args.concurrency:
                LAB_ENV["MAILCHECK_FLEET_CONCURRENCY"] = str(args.concurrency)
            runs(args, fleet, key, workdir, playbook_bin, alone, result)
    finally:
        dnslab.close()
    print(medians(result))
    print(f"results: {args.out}")
    return 0


def runs(args, fleet, key: Path, workdir: Path, playbook_bin, alone: list[float], result: dict) -> None:
    """The lab's costs, Ansible's files, then each run (results written after each)."""
    result["lab"] = lab_costs(fleet, alone)
    inventory = fleet.inventory(workdir / "inventory.yaml")
    ansible = None
    if playbook_bin is not None:
        hosts = {fleet.name(lab): lab.ip for lab, _ in fleet.hosts}
        inv, play = ansible_fleet.write_files(workdir, hosts, key, fleet.known_hosts(
            workdir / "known_hosts"), declared_commands(fleet))
        ansible = (playbook_bin, inv, play)
        result["ansible_version"] = ansible_fleet.version(playbook_bin)
        result["commands"] = len(declared_commands(fleet))
    result["single_rss"] = single_process_rss(inventory, fleet.name(fleet.hosts[0][0]))
    for i in range(args.runs):
        run = one_run(fleet, inventory, workdir, ansible)
        result["runs"].append(run)
        args.out.write_text(json.dumps(result, indent=1))
        print(summary_line(i + 1, run), flush=True)


def summary_line(n: int, run: dict) -> str:
    s, m = run["singles"], run["mailcheck"]
    bound = 1.5 * s["slowest"] + len(m["verdicts"]) * s["overhead"]
    same = sum(m["verdicts"].get(h) == v["verdict"] for h, v in s["hosts"].items())
    text = (f"run {n} load {run['load_before'][0]:.1f}->{run['load_after'][0]:.1f}: "
            f"singles S={s['slowest']:.2f}s sum={sum(h['seconds'] for h in s['hosts'].values()):.1f}s "
            f"o={s['overhead']:.3f}s (client {s['client_overhead']:.3f}s); "
            f"mailcheck {m['wall']:.2f}s (bound {bound:.2f}s) rss {m['peak_rss'] / 2**20:.0f}MiB "
            f"fds {m['fds']} same verdicts {same}/{len(s['hosts'])}")
    for key in ("ansible5", "ansible50"):
        if key in run:
            a = run[key]
            text += (f"; {key} {a['wall']:.1f}s ({a['wall'] / m['wall']:.1f}x) pss "
                     f"{a['pss'] / 2**20:.0f}MiB ({a['pss'] / max(1, m['pss']):.1f}x)")
    return text


def medians(result: dict) -> str:
    """Medians over the runs, and each run's ratios to mailcheck (same run) summarised."""
    runs = result["runs"]

    def med(f) -> float:
        return statistics.median(f(r) for r in runs)

    lines = [f"medians of {len(runs)} runs: mailcheck {med(lambda r: r['mailcheck']['wall']):.2f}s, "
             f"peak RSS {med(lambda r: r['mailcheck']['peak_rss']) / 2**20:.1f} MiB "
             f"(one host alone: {result['single_rss'] / 2**20:.1f} MiB), "
             f"fds {med(lambda r: r['mailcheck']['fds']):.0f}"]
    for key in ("ansible5", "ansible50"):
        if all(key in r for r in runs):
            lines.append(
                f"{key}: {med(lambda r, k=key: r[k]['wall']):.1f}s, "
                f"time ratio {med(lambda r, k=key: r[k]['wall'] / r['mailcheck']['wall']):.1f}x, "
                f"PSS {med(lambda r, k=key: r[k]['pss']) / 2**20:.0f} MiB "
                f"(ratio {med(lambda r, k=key: r[k]['pss'] / r['mailcheck']['pss']):.1f}x), "
                f"RSS sum ratio {med(lambda r, k=key: r[k]['sampled_rss'] / r['mailcheck']['sampled_rss']):.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
