"""Containers that publish mail ports, as their engine (Docker, Podman) reports them.

Read-only: `ENGINE ps -a -q` then `ENGINE inspect` of every container, in one fixed script
per engine (its only variable word is the engine's name, our own), run only where the
engine has something to list. Inspect, not `ps
--format`: `docker ps` drops the ports of a stopped container, and a stopped container is
exactly the one to name. Docker's and Podman's inspect share the fields read here (Name,
Config.Image, State, HostConfig.PortBindings, NetworkSettings).

Pure and total: a missing engine, a daemon that does not answer or output that does not
parse give no containers and a line saying why (evidence), never an exception.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from bot.models import Command, CommandResult, Fix, PortKey, Precondition

Results = Mapping[tuple[str, ...], CommandResult]

ENGINES = ("docker", "podman")
# Only where the engine has something to list, so a check never makes an engine create its
# state on a host (a first `podman ps` as root creates /var/lib/containers): docker when its
# daemon's socket is there (DOCKER_HOST, or the default one); podman when its storage holds
# containers (graphroot from CONTAINERS_STORAGE_CONF or storage.conf, else the default).
_GATE = {
    "docker": '[ -n "$DOCKER_HOST" ] || [ -S /var/run/docker.sock ] || exit 0',
    "podman": ('root=; for c in "$CONTAINERS_STORAGE_CONF" /etc/containers/storage.conf '
               '/usr/share/containers/storage.conf; do [ -f "$c" ] || continue; '
               'root=$(sed -n \'s/^[[:space:]]*graphroot[[:space:]]*=[[:space:]]*"\\(.*\\)".*/\\1/p\' "$c"); break; done; '
               'ls -d "${root:-/var/lib/containers/storage}"/*-containers >/dev/null 2>&1 || exit 0'),
}
_INSPECT_ALL = ('command -v "$0" >/dev/null || exit 127; {gate}; ids=$("$0" ps -a -q --no-trunc) '
                '|| exit; [ -n "$ids" ] || exit 0; exec "$0" inspect $ids')
INSPECT = {engine: ("sh", "-c", _INSPECT_ALL.format(gate=_GATE[engine]), engine) for engine in ENGINES}
ANY = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Binding:
    host_ip: str  # '' / 0.0.0.0 / :: for every address
    host_port: int
    container_port: int

    def serves(self, family: str) -> bool:
        """An unspecified host address ('') is IPv4 for sure; IPv6 only where the engine says so
        (a running Docker container lists its '::' binding; Podman's IPv4 networks have none)."""
        if self.host_ip == "":
            return family == "ipv4"
        return (":" in self.host_ip) == (family == "ipv6")


@dataclass(frozen=True)
class Container:
    engine: str
    id: str
    name: str
    image: str
    state: str  # running | exited | restarting | paused | created | dead ...
    exit_code: int | None = None
    error: str = ""
    finished_at: str = ""
    restart_policy: str = ""
    bindings: tuple[Binding, ...] = ()
    addresses: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def publishes(self, port: int, family: str) -> bool:
        return any(b.host_port == port and b.serves(family) for b in self.bindings)

    def describe(self) -> str:
        """'mail (image mailcheck-lab/postfix:bookworm, docker, exited with code 137 at ...)'."""
        state = self.state
        if not self.running:
            if self.exit_code is not None:
                state += f" with code {self.exit_code}"
            if self.finished_at and not self.finished_at.startswith("0001-"):
                state += f" at {self.finished_at[:19].replace('T', ' ')} UTC"
            if self.error:
                state += f": {self.error[:160]}"
        return f"{self.name} (image {self.image}, {self.engine}, {state})"


@dataclass(frozen=True)
class Containers:
    containers: tuple[Container, ...] = ()
    notes: tuple[str, ...] = ()  # why an engine could not be asked (evidence)

    def publishing(self, port: int, family: str) -> list[Container]:
        return [c for c in self.containers if c.publishes(port, family)]

    def at(self, address: str | None) -> Container | None:
        return next((c for c in self.containers if address and address in c.addresses), None)


def commands() -> list[Command]:
    """Each exits 127 where its engine's CLI is not installed."""
    return [Command(argv, timeout=8) for argv in INSPECT.values()]


def read_containers(results: Results) -> Containers:
    found: list[Container] = []
    notes: list[str] = []
    for engine, argv in INSPECT.items():
        r = results.get(argv)
        if r is None or r.missing:
            continue
        if r.timed_out or r.exit_status != 0:
            why = "timed out" if r.timed_out else f"exit {r.exit_status}"
            notes.append(f"{engine} ps -a / inspect: {why}: {(r.stderr or r.stdout).strip()[:200]}")
            continue
        try:
            items = json.loads(r.stdout) if r.stdout.strip() else []
        except ValueError as e:
            notes.append(f"{engine} inspect: output is not JSON ({e})")
            continue
        found += [c for item in items if isinstance(item, dict) and (c := _container(engine, item))]
    return Containers(tuple(found), tuple(notes))


def _container(engine: str, d: dict) -> Container | None:
    state = d.get("State") if isinstance(d.get("State"), dict) else {}
    host = d.get("HostConfig") if isinstance(d.get("HostConfig"), dict) else {}
    config = d.get("Config") if isinstance(d.get("Config"), dict) else {}
    net = d.get("NetworkSettings") if isinstance(d.get("NetworkSettings"), dict) else {}
    if not d.get("Id"):
        return None
    networks = net.get("Networks") if isinstance(net.get("Networks"), dict) else {}
    addresses = [net.get("IPAddress"), net.get("GlobalIPv6Address"),
                 *(v.get(k) for v in networks.values() if isinstance(v, dict)
                   for k in ("IPAddress", "GlobalIPv6Address"))]
    policy = host.get("RestartPolicy") if isinstance(host.get("RestartPolicy"), dict) else {}
    exit_code = state.get("ExitCode")
    return Container(
        engine=engine, id=str(d["Id"]), name=str(d.get("Name") or d["Id"][:12]).lstrip("/"),
        image=str(config.get("Image") or d.get("ImageName") or d.get("Image") or "?"),
        state=str(state.get("Status") or "unknown"),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        error=str(state.get("Error") or ""), finished_at=str(state.get("FinishedAt") or ""),
        restart_policy=str(policy.get("Name") or ""),
        bindings=_bindings(host.get("PortBindings"), net.get("Ports")),
        addresses=tuple(dict.fromkeys(a for a in addresses if isinstance(a, str) and a)))


def _bindings(*specs) -> tuple[Binding, ...]:
    """{'25/tcp': [{'HostIp': '', 'HostPort': '25'}]} -> Bindings (tcp only), from the
    configured bindings and a running container's actual ones (a random host port has an
    empty HostPort until it runs)."""
    out: list[Binding] = []
    for spec in specs:
        for key, hosts in spec.items() if isinstance(spec, dict) else ():
            port, _, proto = str(key).partition("/")
            if proto not in ("", "tcp") or not port.isdigit():
                continue
            for h in hosts if isinstance(hosts, list) else ():
                hp = str(h.get("HostPort") or "") if isinstance(h, dict) else ""
                if hp.isdigit():
                    out.append(Binding(str(h.get("HostIp") or ""), int(hp), int(port)))
    return tuple(dict.fromkeys(out))


def restart_fix(c: Container, ports: list[PortKey]) -> Fix:
    """Restart the container through its engine (by id: no name is ever parsed as an option).
    The precondition: it is still in the state the check saw."""
    state = [c.engine, "inspect", "-f", "{{.State.Status}}", c.id]
    return Fix(
        id=f"container-restart-{c.engine}-{c.id[:12]}", kind="service",
        summary=f"Restart container {c.name} ({c.engine} restart)", label=f"Restart container {c.name}",
        commands=[[c.engine, "restart", c.id]], backend=c.engine, expected_allow=ports,
        preconditions=[Precondition(argv=state, description=f"container {c.name} is "
                                    f"still {c.state}", expect_sha256=hashlib.sha256(f"{c.state}\n".encode()).hexdigest())],
        findings=["service.container_down"])

