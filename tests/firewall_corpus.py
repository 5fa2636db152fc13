"""The lab-verified firewall corpus: rulesets with the verdicts the KERNEL gave.

Layout, one directory per case:

    tests/data/firewall/<name>/case.yaml
        description: what the ruleset is and why it matters
        backend: iptables | ufw | nft | firewalld | csf | fail2ban | docker | podman (default iptables)
        setup:                                          argv lists run inside the host
          - [iptables, -A, INPUT, -s, "{prober}/32", -j, DROP]
          - [nft, -f, "{dir}/ruleset.nft"]
        container:                                      (optional) mail in a container behind
          engine: dockerd | podman | netns              the host, ports DNATed through FORWARD
          iptables: nft | legacy                        (dockerd: which iptables it drives)
          layout: docker28-iptables                     (netns: tests/data/containers/NAME.*)
          bridge: docker0                               (netns)
          proxy: true                                   (netns: Docker's docker-proxy per port)
          publish: [25, 587]                            see tests/containerlab.py; setup runs after
        fail2ban:                                       (optional) real fail2ban in the host
          jail: exim                                    (a jail of Debian's jail.conf)
          banaction: iptables-multiport                 (or nftables-multiport, ...)
          ban: ["{prober}"]                             fail2ban-client set JAIL banip ADDR
        files_from: ../../csf/NAME                      (optional) more files for {dir}
        csf: NAME                                       (optional) real CSF installed with that
                                                        recording's csf.conf (tests/csflab.py)
        expect:                                         (optional)
          unknown: ["inbound/*/25"]    keys (fnmatch globs) where the model may say "unknown"
          notes: free text
          model_gap: why the model is known to disagree with the kernel here (the tests
                     then expect the disagreement: xfail, strict)
          no_fix: why no fix is planned (the fix tests then assert that none is)
    tests/data/firewall/<name>/expected.json   written by `record`: the kernel's verdicts
    tests/data/firewall/<name>/captured/       written by `record`: collect_commands() output
    expected.json "paths" (container cases): per published port (inbound/ipv4/P) the kernel's
        own account of the probe (tests/kernel_path.py): hook (forward|input), translated
        destination, the deciding rule/policy (nft trace), conntrack entry, rules hit.

Placeholders in argv words and in the case's own files (copied, templated, to
a per-host directory that {dir} names): {prober} {prober6} (the outside end,
the probe's source), {host} {host6} (the host's addresses), {iface} (eth0),
{dir}. Verdict keys are "direction/family/port", e.g. "inbound/ipv6/587".

Record (root, lab packages):  python -m tests.firewall_corpus record [NAMES...]
List:                         python -m tests.firewall_corpus list
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.models import Command, CommandResult

CORPUS = Path(__file__).parent / "data" / "firewall"
INBOUND_PORTS = (22, 25, 465, 587, 143, 993)
OUTBOUND_PORTS = (25, 465, 587)
FAMILIES = ("ipv4", "ipv6")
LISTEN_PORTS = (25, 465, 587, 143, 993)  # 22 is sshd's
# Collected besides collect_commands() (when it lacks them): legacy tables are invisible to
# iptables-nft-save; the listing a person reads (the guide's) ties the cases to the guide.
EXTRA_COMMANDS = (
    Command(("iptables-legacy-save", "-c")),
    Command(("ip6tables-legacy-save", "-c")),
    Command(("iptables", "-L", "-v", "-n", "--line-numbers")),
)
# Container cases: who serves the published ports, the engine's own view, the forwarding state.
CONTAINER_COMMANDS = (
    Command(("ss", "-Hltnp")),
    Command(("docker", "ps", "--no-trunc", "--format", "{{json .}}")),
    Command(("podman", "ps", "--format", "json")),
    Command(("sysctl", "net.ipv4.ip_forward")),
    Command(("ip", "-4", "route")),
)


def fail2ban_commands(host) -> tuple[Command, ...]:
    """fail2ban's own view, when a real fail2ban runs in the host (tests/f2blab.py)."""
    from tests.f2blab import STATUS_COMMANDS, jail_commands

    local = host.etc / "fail2ban" / "jail.local"
    if not local.exists():
        return ()
    jails = [line.strip("[]") for line in local.read_text().splitlines()
             if line.startswith("[") and line.strip("[]") != "sshd"]
    return tuple(Command(argv) for argv in STATUS_COMMANDS + tuple(a for j in jails for a in jail_commands(j)))


@dataclass
class Case:
    name: str
    path: Path
    description: str
    setup: list[list[str]]
    backend: str = "iptables"
    unknown_ok: list[str] = field(default_factory=list)
    notes: str = ""
    model_gap: str = ""
    no_fix: str = ""  # why no fix is planned (nothing blocked, a ban, a verdict not understood)
    container: dict = field(default_factory=dict)
    fail2ban: dict = field(default_factory=dict)
    files_from: str = ""
    csf: str = ""  # real CSF's recording (tests/csflab.py RECORDINGS) whose csf.conf the host gets

    @property
    def published(self) -> tuple[int, ...]:
        return tuple(self.container.get("publish") or ())

    @property
    def expected_file(self) -> Path:
        return self.path / "expected.json"

    @property
    def captured_dir(self) -> Path:
        return self.path / "captured"

    def expected(self) -> dict:
        return json.loads(self.expected_file.read_text())

    def may_be_unknown(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.unknown_ok)


def key(direction: str, family: str, port: int) -> str:
    return f"{direction}/{family}/{port}"


def split_key(k: str) -> tuple[str, str, int]:
    direction, family, port = k.split("/")
    return direction, family, int(port)


def all_keys() -> list[str]:
    return [key("inbound", f, p) for f in FAMILIES for p in INBOUND_PORTS] + [
        key("outbound", f, p) for f in FAMILIES for p in OUTBOUND_PORTS]


def load_case(path: Path) -> Case:
    data = yaml.safe_load((path / "case.yaml").read_text()) or {}
    expect = data.get("expect") or {}
    return Case(
        name=path.name, path=path, description=str(data.get("description", "")).strip(),
        setup=[[str(w) for w in argv] for argv in data.get("setup") or []],
        backend=data.get("backend", "iptables"), unknown_ok=list(expect.get("unknown") or []),
        notes=str(expect.get("notes", "")), model_gap=str(expect.get("model_gap", "")),
        no_fix=str(expect.get("no_fix", "")), container=dict(data.get("container") or {}),
        fail2ban=dict(data.get("fail2ban") or {}), files_from=str(data.get("files_from", "")),
        csf=str(data.get("csf", "")),
    )


def load_cases(names: list[str] | None = None) -> list[Case]:
    paths = sorted(p for p in CORPUS.iterdir() if (p / "case.yaml").exists()) if CORPUS.exists() else []
    cases = [load_case(p) for p in paths]
    return [c for c in cases if not names or c.name in names]


# --- captured command output ---------------------------------------------------------------

def file_name(argv: tuple[str, ...]) -> str:
    """('iptables-save', '-c') -> 'iptables-save_-c.txt' (safe, readable, unique enough)."""
    words = [re.sub(r"[^A-Za-z0-9._-]+", "_", w).strip("_") for w in argv]
    return "_".join(w for w in words if w)[:120] + ".txt"


def save_captured(directory: Path, results: list[CommandResult]) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    index = []
    for r in results:
        name = file_name(r.command.argv)
        (directory / name).write_text(r.stdout)
        index.append({"file": name, "argv": list(r.command.argv), "env": [list(e) for e in r.command.env],
                      "exit_status": r.exit_status, "stderr": r.stderr})
    (directory / "commands.json").write_text(json.dumps(index, indent=1) + "\n")


def load_captured(directory: Path) -> dict[tuple[str, ...], CommandResult]:
    """captured/ -> {argv: CommandResult}, as the engine hands results to the firewall analysis."""
    results = {}
    for item in json.loads((directory / "commands.json").read_text()):
        cmd = Command(tuple(item["argv"]), env=tuple(tuple(e) for e in item.get("env") or ()))
        stdout = (directory / item["file"]).read_text()
        results[cmd.argv] = CommandResult(cmd, item["exit_status"], stdout, item.get("stderr", ""))
    return results


# --- the model's side ----------------------------------------------------------------------

def parse_results(results):
    """Ruleset from captured results, exactly as the product parses them."""
    from bot.firewall import parse_all

    return parse_all(results)


def model_verdicts(results, addresses: dict) -> dict[str, object]:
    """Per key, the analysis' PortVerdict for the same packets the lab sent (from the captured output)."""
    from bot.firewall.analysis import port_verdict

    ruleset, ends = parse_results(results), endpoints(addresses, results)
    return {k: port_verdict(ruleset, split_key(k), ends[split_key(k)[1]]) for k in all_keys()}


def mismatches(case: Case, kernel: dict[str, str], results, addresses: dict) -> list[str]:
    """Where the model disagrees with the kernel (unknown counts unless the case allows it)."""
    problems = []
    verdicts = model_verdicts(results, addresses)
    for k, want in sorted(kernel.items()):
        got = verdicts[k].verdict
        if got == want or (got == "unknown" and case.may_be_unknown(k)):
            continue
        reasons = "; ".join(verdicts[k].reasons)
        problems.append(f"{case.name} {k}: kernel {want}, model {got} {verdicts[k].blocked_by or ''} {reasons}")
    return problems


# --- the lab's side ------------------------------------------------------------------------

def addresses_of(host) -> dict[str, str]:
    return {"prober": host.outside_ip, "prober6": host.outside_ip6, "host": host.ip, "host6": host.ip6,
            "iface": "eth0"}


def template(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def apply_setup(host, case: Case) -> None:
    """Copy the case's files (templated) to the host's workdir and run its setup inside the host."""
    values = addresses_of(host)
    if case.container:  # tests/containerlab.py's addresses: container network 198.19.N.0/24
        values.update(cip=f"198.19.{host.index}.2", csubnet=f"198.19.{host.index}.0/24")
    target = host.workdir / "case"
    target.mkdir(exist_ok=True)
    values["dir"] = str(target)
    sources = [*case.path.iterdir(), *((case.path / case.files_from).iterdir() if case.files_from else ())]
    for f in sources:
        if f.is_file() and f.name not in ("case.yaml", "expected.json"):
            (target / f.name).write_text(template(f.read_text(), values))
    for argv in case.setup:
        r = host.sh(*(template(w, values) for w in argv), check=False, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{case.name}: setup {argv} exited {r.returncode}: {r.stderr.strip()}")


LISTENER = (
    "import socket,sys,time\n"
    "socks=[]\n"
    "for a in sys.argv[1:]:\n"
    " p=int(a.split('/')[0])\n"
    " s=socket.socket(socket.AF_INET6);s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,a.endswith('/6'))\n"
    " s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('::',p));s.listen(64);socks.append(s)\n"
    "print('ready',flush=True)\n"
    "while True: time.sleep(3600)\n"
)


def start_listeners(host, ports=LISTEN_PORTS, v6only=()) -> None:
    """Plain TCP listeners inside the host (dual stack; IPv6 only for the ports in v6only), so
    'refused' can only mean a REJECT."""
    args = [str(p) for p in ports] + [f"{p}/6" for p in v6only]
    host.popen("python3", "-c", LISTENER, *args, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    host.wait_listening(set(ports) | set(v6only))


def start_container(host, case: Case):
    """The case's container engine with its ports published; returns the engine object."""
    from tests.containerlab import Dockerd, NetnsContainer, Podman

    spec, publish = case.container, case.published
    if spec["engine"] == "dockerd":
        engine = Dockerd(host, iptables=spec.get("iptables", "nft")).start()
        engine.run_mail(publish=publish)
    elif spec["engine"] == "podman":
        engine = Podman(host).start()
        engine.run_mail(publish=publish)
    elif spec["engine"] == "netns":
        engine = NetnsContainer(host, bridge=spec.get("bridge", "docker0")).start(publish)
        engine.apply_layout(spec["layout"], publish)
        for port in publish if spec.get("proxy") else ():
            engine.start_proxy(port)
    else:
        raise ValueError(f"{case.name}: unknown container engine {spec['engine']!r}")
    return engine


def start_case_fail2ban(host, case: Case) -> None:
    from tests.f2blab import ban, start_fail2ban

    spec = case.fail2ban
    jail = spec.get("jail", "exim")
    start_fail2ban(host, jail=jail, banaction=spec.get("banaction", "iptables-multiport"))
    for address in spec.get("ban") or ():
        ban(host, jail, template(address, addresses_of(host)))


def _ipv6_held(host, port: int) -> bool:
    """Does something in the host (docker-proxy) listen on [::]:port already?"""
    out = host.sh("ss", "-Hltn", f"sport = :{port}").stdout
    return any(line.split()[3].startswith("[::]:") for line in out.splitlines() if line.strip())


def outcome_verdict(outcome: str) -> str:
    """open -> allow; filtered (timeout), refused (a REJECT: listeners exist), error -> block."""
    return "allow" if outcome == "open" else "block"


def kernel_outcomes(host, timeout: float = 1.5) -> dict[str, str]:
    """Probe every key from outside (inbound) or from inside to outside listeners (outbound)."""
    jobs = {}
    with host.outside_listener(OUTBOUND_PORTS), host.outside_listener(OUTBOUND_PORTS, six=True):
        with ThreadPoolExecutor(max_workers=18) as pool:
            for k in all_keys():
                direction, family, port = split_key(k)
                fn = host.probe if direction == "inbound" else host.connect_out
                jobs[k] = pool.submit(fn, port, six=family == "ipv6", timeout=timeout)
            return {k: f.result() for k, f in jobs.items()}


def collect(host) -> list[CommandResult]:
    from bot.firewall import collect_commands

    out = []
    commands = collect_commands()
    extra = EXTRA_COMMANDS + (CONTAINER_COMMANDS if host.ssh_env else ()) + fail2ban_commands(host)
    commands += [c for c in extra if c.argv not in {x.argv for x in commands}]
    for cmd in commands:
        # the engine's socket/config, as the host's SSH sessions get it (LabHost.set_ssh_env)
        env = [f"{k}={v}" for k, v in (*host.ssh_env.items(), *cmd.env)]
        r = host.session("env", *env, *cmd.argv, check=False, timeout=cmd.timeout + 15)
        out.append(CommandResult(cmd, r.returncode, r.stdout, r.stderr))
    return out


def run_case(host, case: Case) -> tuple[dict[str, str], list[CommandResult]]:
    """Fresh host -> [container,] listeners, setup, kernel outcomes, collected outputs.

    With a container, the published ports get no host listener on IPv4 (the DNAT sends
    those probes to the container) and an IPv6-only one unless the engine's proxy holds
    [::]:port, so a refusal still means a REJECT."""
    if case.container:
        start_container(host, case)
        published = set(case.published)
        start_listeners(host, [p for p in LISTEN_PORTS if p not in published],
                        v6only=[p for p in case.published if not _ipv6_held(host, p)])
    else:
        start_listeners(host)
    if case.fail2ban:
        start_case_fail2ban(host, case)
    if case.csf:
        install_case_csf(host, case)
    apply_setup(host, case)
    outcomes = kernel_outcomes(host)
    return outcomes, collect(host)


def install_case_csf(host, case: Case) -> None:
    """Real CSF's configuration and program in the host, as in the recording the case replays
    (tests/data/csf/NAME): `csf -v` and csf.conf answer as on that host; the rules come from the
    recording (setup: iptables-restore), not from `csf -s`."""
    from tests.csflab import RECORDINGS, Csf, required_snapshot

    Csf(host, required_snapshot()).install(**RECORDINGS[case.csf][0])


def kernel_paths(host, case: Case) -> dict[str, dict]:
    """Per published port (IPv4, from outside): the kernel's own account of the probe."""
    from tests.kernel_path import trace_probe

    return {key("inbound", "ipv4", p): trace_probe(host, p, host.probe) for p in case.published}


# labhost.close() deletes the namespace before its /etc/netns files and veth: a host made
# meanwhile in another thread could get the same index. Serialize making and closing.
_LIFECYCLE = threading.Lock()
_CSF = threading.Lock()  # one CSF host at a time: another's close may remove /etc/csf under it


def record_case(case: Case, client_key: Path) -> dict:
    from tests.labhost import make_host

    with _LIFECYCLE:
        host = make_host(client_key)
    try:
        with _CSF if case.csf else contextlib.nullcontext():  # CSF's mount points are the machine's
            outcomes, results = run_case(host, case)
        expected = {
            "addresses": addresses_of(host),
            "kernel": {k: outcome_verdict(o) for k, o in outcomes.items()},
            "outcomes": outcomes,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if case.container:
            expected["paths"] = kernel_paths(host, case)
        case.expected_file.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        save_captured(case.captured_dir, results)
        return expected
    finally:
        with _LIFECYCLE:
            host.close()


def _summary(expected: dict) -> str:
    blocked = [k for k, v in sorted(expected["kernel"].items()) if v != "allow"]
    return "block: " + (", ".join(blocked) if blocked else "none")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("record", "list"):
        print(__doc__)
        return 2
    cases = load_cases(argv[1:] or None)
    if argv[0] == "list":
        for c in cases:
            print(f"{c.name:40} {c.backend:9} {'recorded' if c.expected_file.exists() else '-'}")
        return 0
    from tests.labhost import make_client_key, missing_prerequisites

    if missing_prerequisites():
        print("lab needs:", ", ".join(missing_prerequisites()))
        return 2
    key_dir = Path(tempfile.mkdtemp(prefix="mccorpus-"))
    client_key = make_client_key(key_dir)
    failed = 0
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {c.name: pool.submit(record_case, c, client_key) for c in cases}
        for name, f in futures.items():
            try:
                print(f"{name}: {_summary(f.result())}")
            except Exception as e:  # noqa: BLE001 - report every case
                failed += 1
                print(f"{name}: FAILED: {e}")
    shutil.rmtree(key_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- fix plans on a case (unit and lab tests share this) ----------------------------------------

def endpoints(addresses: dict, results=None) -> dict:
    """Per family, the Endpoints the analysis builds for the lab's addresses (and, given the
    captured output, the host's routes and forwarding)."""
    from bot.firewall.analysis import Endpoints
    from bot.firewall.parse.routes import routes_from

    local = frozenset({addresses["host"], addresses["host6"], "127.0.0.1", "::1"})
    iface = addresses.get("iface", "eth0")
    return {f: Endpoints(addresses[h], addresses[p], iface, local, routes_from(results or {}, f))
            for f, h, p in (("ipv4", "host", "prober"), ("ipv6", "host6", "prober6"))}


def mail_keys() -> list[tuple[str, str, int]]:
    return [split_key(k) for k in all_keys() if not k.endswith("/22")]


def plan_fixes(results, addresses: dict):
    """iptables + ufw plans for every mail key the model blocks, as the analysis would ask."""
    from bot.firewall.parse.iptables import default_source, save_has_file_option
    from bot.firewall.parse.ufw import parse_ufw_status
    from bot.firewall.plan.base import PlannedFixes
    from bot.firewall.plan.iptables import plan_iptables
    from bot.firewall.plan.ufw import plan_ufw

    ruleset = parse_results(results)
    ufw_result = results.get(("ufw", "status", "verbose"))
    status = parse_ufw_status(ufw_result.stdout if ufw_result else "", ufw_result.exit_status if ufw_result else 127)
    ends = endpoints(addresses, results)
    keys = mail_keys()
    plan = PlannedFixes()
    version = results[("iptables", "-V")].stdout if ("iptables", "-V") in results else ""
    for part in (plan_iptables(ruleset, keys, ends, ufw_active=bool(status.active),
                               default_source=default_source(version),
                               save_file_option=save_has_file_option(version)),
                 plan_ufw(ruleset, status, keys, ends)):
        plan.fixes += part.fixes
        plan.notes += part.notes
    return ruleset, plan
