"""A second view of the mail ports: the inventory's vantage points probe them too.

mailcheck often runs inside the mail server's own network, where a connection to the
public address takes another path than the internet's. Each inventory host marked
`vantage: true` probes the addresses mailcheck probes, over the SSH connection mailcheck
already has to it (jump hosts included), with one fixed script:

- `python3 -c <bot/vantage_probe.py> TIMEOUT ADDRESS PORT...`: a TCP connect per port with
  IP_RECVERR, printing the raw errno and error queue; classified here exactly as the outside
  probe is (bot.probes.classify_failure, bot.checks.answers.attribute): open, refused,
  rejected (with the ICMP answer and who sent it), filtered, error;
- without python3: `bash -c <BASH_PROBE> bash TIMEOUT ADDRESS PORT...` (bash's /dev/tcp under
  `timeout`), which tells only open and filtered apart: a failed connect is `unknown` (a TCP
  RST and an ICMP port-unreachable give bash the same "Connection refused").

Its work starts as soon as the addresses are final and runs beside the other steps. Where
a vantage point's answer and mailcheck's differ (both known), `vantage.disagrees` names
both views: a block on one path (guide step 5), or a host rule for one source only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bot.checks import answers
from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.ports import detail
from bot.errors import MailcheckError
from bot.icmp import parse
from bot.models import (
    INBOUND_PORTS,
    Command,
    CommandResult,
    Finding,
    PortKey,
    PortUpdate,
    VantageView,
)
from bot.probes import PortProbe, classify_failure
from config.inventory import Host

PYTHON_PROBE = (Path(__file__).parents[1] / "vantage_probe.py").read_text(encoding="utf-8")
BASH_PROBE = r"""probe() {
  m=$(timeout "$1" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>&1); r=$?
  printf '%s %s %s\n' "$3" "$r" "$(printf %s "$m" | tr '\n' ' ')"
}
t=$1 a=$2; shift 2
for p; do probe "$t" "$a" "$p" & done; wait
"""
KNOWN = ("open", "refused", "rejected", "filtered")  # the answers a disagreement rests on


def python_command(address: str, timeout: float) -> Command:
    return Command(("python3", "-c", PYTHON_PROBE, f"{timeout:g}", address,
                    *map(str, INBOUND_PORTS)), timeout=timeout + 5)


def bash_command(address: str, timeout: float) -> Command:
    return Command(("bash", "-c", BASH_PROBE, "bash", str(max(1, round(timeout))), address,
                    *map(str, INBOUND_PORTS)), timeout=timeout + 5)


@dataclass
class VantageRun:
    """One vantage point's probes of the host (or why it could not probe)."""

    host: Host
    probes: list[PortProbe] = field(default_factory=list)
    error: str | None = None


def read_python(stdout: str, timeout: float) -> list[PortProbe]:
    """The python probe's JSON -> one PortProbe per port, classified as bot.probes does.
    ValueError when it is not the probe's output."""
    try:
        data = json.loads(stdout)
    except RecursionError as e:
        raise ValueError("nested too deeply") from e
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise ValueError("not the probe's output")
    address, family = data["address"], "ipv6" if ":" in data["address"] else "ipv4"
    same_order = data.get("byteorder") == sys.byteorder
    out = []
    for p in data["probes"]:
        _check_shape(p)
        base = dict(family=family, address=address, port=p["port"], source=p.get("source"),
                    elapsed=float(p.get("elapsed", 0.0)))
        if p["errno"] == 0:
            out.append(PortProbe(state="open", **base))
        elif p["errno"] is None:
            out.append(PortProbe(state="filtered", error=f"no answer within {timeout:g}s", **base))
        elif not same_order and p["cmsg"]:
            out.append(PortProbe(state="error", error=f"errno {p['errno']}; the ICMP details come "
                                 "from a host of another byte order: not read", **base))
        else:
            icmp = None
            for level, kind, hexdata in p["cmsg"]:
                icmp = parse(level, kind, bytes.fromhex(hexdata)) or icmp
            state, why = classify_failure(OSError(p["errno"], os.strerror(p["errno"])), icmp, base["source"])
            out.append(PortProbe(state=state, error=why, icmp=icmp, **base))
    return out


def _check_shape(p: object) -> None:
    """ValueError unless one probe's fields have the types the probe prints (the vantage host
    is not trusted: a huge errno or port would be an OverflowError, a source that is not a
    string a crash of the step for every vantage point)."""
    ok = (isinstance(p, dict) and isinstance(p.get("port"), int) and p["port"] in INBOUND_PORTS
          and (p.get("errno") is None or (isinstance(p["errno"], int) and 0 <= p["errno"] < 4096))
          and isinstance(p.get("source"), str | None) and isinstance(p.get("elapsed", 0.0), int | float)
          and isinstance(p.get("cmsg"), list))
    if not ok:
        raise ValueError("not the probe's output")


def read_bash(stdout: str, address: str, timeout: float) -> list[PortProbe]:
    """The bash probe's `PORT EXIT MESSAGE` lines -> PortProbes: open, filtered (timeout's
    124), else unknown (bash's errno does not say who answered)."""
    family = "ipv6" if ":" in address else "ipv4"
    out = []
    for line in sorted((x for x in stdout.splitlines() if x.strip()), key=lambda x: int(x.split()[0])):
        port, rc, *rest = line.split(" ", 2)
        msg = (rest[0] if rest else "").strip()
        state = {"0": "open", "124": "filtered"}.get(rc, "unknown")
        why = None
        if state == "filtered":
            why = f"no answer within {timeout:g}s"
        elif state == "unknown":
            why = (f"bash: {msg or 'exit ' + rc} (bash cannot tell who answered: a TCP RST, an ICMP "
                   "reject, or the vantage point's own kernel)")
        out.append(PortProbe(family, address, int(port), state, elapsed=0.0, error=why))  # type: ignore[arg-type]
    return out


class VantageLookups:
    def __init__(self, ctx: CheckContext) -> None:
        self.hosts, self.connect, self.timeout = ctx.vantages, ctx.connect, ctx.settings.probe_timeout
        self._runs: list[asyncio.Task[VantageRun]] = []

    def update(self, inp: CheckInput) -> None:
        return None  # the probes wait for the final addresses (result)

    async def result(self, inp: CheckInput) -> list[VantageRun]:
        addresses = sorted(inp.addresses.values())
        self._runs = [asyncio.ensure_future(self._probe(h, addresses)) for h in self.hosts]
        return list(await asyncio.gather(*self._runs))

    async def _probe(self, host: Host, addresses: list[str]) -> VantageRun:
        try:
            transport = self.connect(host)
        except MailcheckError as e:
            return VantageRun(host, error=str(e))
        try:
            results = await transport.run([python_command(a, self.timeout) for a in addresses], step="vantage")
            if results and all(r.missing for r in results):
                results = await transport.run([bash_command(a, self.timeout) for a in addresses], step="vantage")
            return VantageRun(host, [p for a, r in zip(addresses, results, strict=True)
                                     for p in self._read(a, r)])
        except MailcheckError as e:
            return VantageRun(host, error=f"{type(e).__name__}: {e}")
        finally:
            try:
                await transport.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not hide the result
                pass

    def _read(self, address: str, r: CommandResult) -> list[PortProbe]:
        try:
            if r.command.argv[0] == "python3":
                return read_python(r.stdout, self.timeout)
            return read_bash(r.stdout, address, self.timeout)
        except (ValueError, KeyError, TypeError):
            why = f"the probe's output is unreadable (exit {r.exit_status}): {(r.stderr or r.stdout)[:200]}"
            return [PortProbe("ipv6" if ":" in address else "ipv4", address, p, "error", error=why)
                    for p in INBOUND_PORTS]

    async def close(self) -> None:
        for task in self._runs:
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)


class Vantage(Check):
    name = "vantage"
    needs = ("ports",)  # to compare with mailcheck's own probes

    def lookups(self, ctx: CheckContext) -> VantageLookups | None:
        return VantageLookups(ctx) if ctx.vantages and ctx.connect and ctx.settings else None

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        if inp.lookups is None:
            return StepOutcome("skipped", "no vantage point (inventory `vantage: true`) to probe from")
        host_addresses = [a.address for a in inp.facts.addresses]
        findings: list[Finding] = []
        views: dict[PortKey, list[VantageView]] = {}
        lines, summary = [], []
        for run in inp.lookups:
            name = run.host.name
            if run.error is not None:
                findings.append(finding("vantage.failed", f"Vantage point {name} could not probe: {run.error}",
                                        evidence=run.error))
                summary.append(f"{name}: could not probe")
                continue
            differ = 0
            for p in run.probes:
                key = answers.key(p)
                seen = detail(p, answers.attribute(p, host_addresses)) or p.error
                view = VantageView(vantage=name, source=p.source, outside=p.state, detail=seen)
                views.setdefault(key, []).append(view)
                lines.append(f"{name} ({p.source or '?'}) -> {p.address}:{p.port} {p.state}"
                             f" ({p.elapsed:.2f}s){' — ' + seen if seen else ''}")
                if (f := disagreement(key, inp, view)) is not None:
                    findings.append(f)
                    differ += 1
            summary.append(f"{name}: {len(run.probes)} probe(s), "
                           + (f"{differ} disagree with mailcheck's" if differ else "agree with mailcheck's"))
        ports = {k: PortUpdate(vantage=v) for k, v in views.items() if k in inp.ports}
        return StepOutcome(status_of(findings), "; ".join(summary), "\n".join(lines), findings, ports=ports)


def disagreement(key: PortKey, inp: CheckInput, view: VantageView) -> Finding | None:
    """`vantage.disagrees` when both views are known and differ."""
    mine = inp.ports.get(key)
    here = mine.outside if mine is not None else None
    theirs = view.outside
    if here == theirs or here not in KNOWN or theirs not in KNOWN:
        return None
    src = inp.sources.get(key.family) or "?"
    if "open" in (here, theirs):
        blocked, reaches = (f"mailcheck ({src})", f"vantage point {view.vantage}") if theirs == "open" \
            else (f"vantage point {view.vantage} ({view.source or '?'})", "mailcheck")
        meaning = (f"something on the path from {blocked} blocks it, while from {reaches} it reaches "
                   "the host: a block on one path only (guide step 5, outside the host), or a host "
                   "firewall rule for that source alone (the firewall step's verdict for mailcheck's "
                   "source says which)")
        if theirs == "open":
            meaning += ("; a conclusion that the provider's network blocks it rests on mailcheck's "
                        "path alone")
    else:
        meaning = "the two paths are answered differently: something on at least one of them, or a " \
                  "host rule for one source, treats the port differently"
    return finding(
        "vantage.disagrees",
        f"Port {key.label}: {here} from mailcheck ({src}), {theirs} from vantage point {view.vantage} "
        f"({view.source or '?'}): {meaning}",
        evidence=f"mailcheck ({src}): {here}{' — ' + mine.detail if mine and mine.detail else ''}\n"
                 f"{view.vantage} ({view.source or '?'}): {theirs}{' — ' + view.detail if view.detail else ''}",
        ports=[key])
