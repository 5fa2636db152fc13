"""CSF (ConfigServer Firewall) fixes: the port goes into csf.conf, and `csf -r` rebuilds the rules.

While CSF is in charge (`csf -v` answers, csf.conf is readable, csf is not disabled) it owns
the iptables filter table, and ip6tables' with IPV6 = "1": every `csf -r` (and, in TESTING
mode, cron's `csf -f` every TESTING_INTERVAL minutes) flushes them and builds them again from
csf.conf, so a raw `iptables -I` is undone. A mail port CSF's port filter drops (the packet
falls through to LOGDROPIN / LOGDROPOUT, or the policy) is opened by adding it to the option
that lists the ports of its direction and family:

    TCP_IN (inbound IPv4), TCP_OUT (outbound IPv4), TCP6_IN, TCP6_OUT (IPv6, with IPV6 = "1")

The fix: one `sed -i` per option appending the ports (`TCP_IN = "22,80"` -> `TCP_IN =
"22,80,25,587"`), then `csf -r`. Its backup (BackupSpec) holds csf.conf: the rollback, and the
dead-man guard, put the file back byte for byte and run `csf -r` (the rules are compared
before and after, not restored: CSF rebuilds them). On the model, the change is what `csf -r` writes:
`-A INPUT ! -i lo -p tcp -m conntrack --ctstate NEW -m tcp --dport P -j ACCEPT` before
INPUT's jump to LOGDROPIN (OUTPUT / LOGDROPOUT outbound). Precondition: csf.conf is as read.

Not planned, reported with the reason (a raw rule would be undone by CSF): an address CSF
denies (csf.deny, DENYIN: a ban), a port already listed yet blocked elsewhere, a chain CSF
does not build from a port list (DOCKER-USER: CSF flushes it at its next restart).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bot.firewall.analysis import Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Ruleset, Table
from bot.firewall.parse.csf import (
    CSF_CONF,
    CSF_CONF_PATH,
    CSF_VERSION,
    CsfStatus,
    status_from_results,
)
from bot.firewall.parse.iptables import parse_rule
from bot.firewall.plan.base import Argv, FrontEnd, engines_in, is_source_specific, ports_text
from bot.models import BackupSpec, Command, Finding, Precondition

PORT_CHAINS = {"inbound": ("INPUT", "LOGDROPIN", "!", "-i"), "outbound": ("OUTPUT", "LOGDROPOUT", "!", "-o")}
RELOAD = ["csf", "-r"]


@dataclass(frozen=True)
class CsfChange:
    option: str  # TCP_IN | TCP_OUT | TCP6_IN | TCP6_OUT
    ports: tuple[int, ...]
    reason: str

    @property
    def direction(self) -> str:
        return "inbound" if self.option.endswith("_IN") else "outbound"

    @property
    def family(self) -> str:
        return "ip6" if self.option.startswith("TCP6") else "ip"

    def sed(self) -> Argv:
        """Append the ports to the option's list (an empty list becomes them; trailing commas,
        which CSF ignores and status.ports() accepts, are dropped: else the edit would match
        nothing and `csf -r` would run for no change). Only mailcheck's own words: the option
        name and the port numbers; the preconditions hold the file as read."""
        head = f"^({self.option}[[:space:]]*=[[:space:]]*"
        ports = ",".join(map(str, self.ports))
        return ["sed", "-i", "-E", "-e", f's/{head}"[0-9:,]*[0-9]),*"/\\1,{ports}"/',
                "-e", f's/{head})",*"/\\1"{ports}"/', CSF_CONF_PATH]


def option_for(direction: str, family: str) -> str:
    return f"TCP{'6' if family == 'ipv6' else ''}_{'IN' if direction == 'inbound' else 'OUT'}"


def csf_rule(change: CsfChange, port: int) -> list[str]:
    chain, _, bang, flag = PORT_CHAINS[change.direction]
    return ["-A", chain, bang, flag, "lo", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-m", "tcp",
            "--dport", str(port), "-j", "ACCEPT"]


def apply_change(ruleset: Ruleset, change: CsfChange) -> None:
    """What `csf -r` writes for the new ports: accepts before the base chain's jump to LOGDROP*."""
    table = next((t for t in ruleset.tables if t.source != "nft" and t.family == change.family
                  and t.name == "filter"), None)
    chain_name, logdrop, *_ = PORT_CHAINS[change.direction]
    if table is None or chain_name not in table.chains:
        raise ValueError(f"no {chain_name} chain in the {change.family} filter table")
    rules = table.chains[chain_name].rules
    jumps = [i for i, r in enumerate(rules) if r.verdict.kind == "jump" and r.verdict.chain == logdrop]
    at = jumps[-1] if jumps else len(rules)
    for port in change.ports:
        words = csf_rule(change, port)
        rules.insert(at, parse_rule(words[2:], " ".join(words), table))
        at += 1
    for i, r in enumerate(rules, 1):
        r.position = i


@dataclass(eq=False)
class CsfPlanner(FrontEnd):
    name = "csf"
    reads = (Command(CSF_VERSION), Command(CSF_CONF))
    read_status = staticmethod(status_from_results)
    status: CsfStatus

    def _manages(self, table: Table) -> bool:
        six = table.family == "ip6"
        return table.source != "nft" and table.name == "filter" and (not six or self.status.flag("IPV6"))

    def owns(self, at: Outcome) -> bool:
        return self._manages(at.table)

    def keeps(self, table: Table) -> bool:
        return self.status.active and self._manages(table)

    def undone(self) -> str:
        testing = self.status.flag("TESTING")
        every = f", and every {self.status.options.get('TESTING_INTERVAL', '5')} minutes in TESTING mode" if testing else ""
        return f"a raw iptables rule here would be undone by CSF at its next restart (csf -r{every}): not offered"

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> CsfChange | str:
        d = pv.deciding
        option = option_for(pv.key.direction, pv.key.family)
        listed = self.status.ports(option)
        if pv.reply_blocked:
            return f"CSF blocks the replies ({d.chain.name}), not the port: {self.undone()}"
        if d.rule is not None and is_source_specific(d.rule, d.chain.name):
            return f"CSF denies the address ({d.chain.name}: {d.rule.text}): csf.deny or a temporary deny, a ban"
        if listed is None:
            return f"{option} in {CSF_CONF_PATH} is not a plain port list: {self.undone()}"
        if d.chain.name not in (PORT_CHAINS[pv.key.direction][:2]):
            return f"decided in chain {d.chain.name}, which CSF does not build from {option}: {self.undone()}"
        missing = tuple(sorted(p for p in ports if p not in listed))
        if not missing:
            return f"{option} lists {ports_text(ports)}, yet CSF's {d.chain.name} drops it: {self.undone()}"
        return CsfChange(option, missing, f"add {ports_text(missing)} to {option} in {CSF_CONF_PATH}")

    def apply(self, ruleset: Ruleset, change: CsfChange) -> None:
        apply_change(ruleset, change)

    def commands(self, change: CsfChange) -> tuple[list[Argv], list[Argv]]:
        return [change.sed()], []  # undone by the backup's copy of csf.conf (backup)

    def assemble(self, changes: list[CsfChange]) -> tuple[list[Argv], list[Argv]]:
        """The edits of csf.conf, then one `csf -r`."""
        return [*(c.sed() for c in changes), RELOAD], []

    def backup(self, changes: list[CsfChange]) -> BackupSpec:
        """csf.conf, put back exactly and applied by `csf -r`; the rules compared, guarded."""
        return BackupSpec(paths=[CSF_CONF_PATH], reload=[RELOAD], compare=["iptables", "ip6tables"], guard=True)

    def preconditions(self, ruleset: Ruleset, changes: list[CsfChange], notes: list[str]) -> list[Precondition]:
        conf = self.status.conf or ""
        return [Precondition(argv=list(CSF_CONF), expect_sha256=hashlib.sha256(conf.encode()).hexdigest(),
                             description=f"{CSF_CONF_PATH} is as it was when this fix was planned")]

    def setting(self, pv: PortVerdict, ends: Endpoints) -> str | None:
        d = pv.deciding
        if d is None or d.table is None or not self._manages(d.table):
            return None
        if d.rule is not None and is_source_specific(d.rule, d.chain.name):
            return f"CSF denies the address in {d.chain.name} (csf.deny / csf -d)"
        option = option_for(pv.key.direction, pv.key.family)
        listed = self.status.ports(option)
        if listed is not None and pv.key.port not in listed:
            return f'CSF: not in {option} ({option} = "{self.status.options[option]}" in {CSF_CONF_PATH})'
        return f"CSF: chain {d.chain.name}"

    def findings(self, ruleset: Ruleset) -> list[Finding]:
        s = self.status
        if not s.active:
            return []
        out = [Finding(
            code="firewall.manager", severity="warning" if s.flag("TESTING") else "info", step="firewall",
            summary=f"CSF ({s.version}) manages the firewall from {CSF_CONF_PATH}: a raw iptables rule lives "
                    "only until its next restart" + (" — TESTING mode: cron flushes every rule every "
                                                     f"{s.options.get('TESTING_INTERVAL', '5')} minutes"
                                                     if s.flag("TESTING") else ""),
            evidence="\n".join(f'{k} = "{s.options[k]}"' for k in
                               ("TESTING", "TESTING_INTERVAL", "TCP_IN", "TCP_OUT", "IPV6", "TCP6_IN", "TCP6_OUT")
                               if k in s.options))]
        if not s.flag("IPV6"):
            out.append(Finding(
                code="firewall.ipv6_unfiltered", severity="warning", step="firewall",
                summary=f'CSF leaves IPv6 unfiltered (IPV6 = "0" in {CSF_CONF_PATH}): every IPv6 port is as open '
                        "as the ip6tables rules others left",
                evidence=f'IPV6 = "{s.options.get("IPV6", "")}"'))
        engines = " and ".join(sorted(set(engines_in(ruleset, "ip")) | set(engines_in(ruleset, "ip6"))))
        if engines:
            out.append(Finding(
                code="firewall.engine_rules_flushed", severity="warning", step="firewall",
                summary=f"A CSF restart (csf -r) flushes {engines}'s chains and their DNAT rules: published "
                        f"container ports are no longer forwarded to the containers until {engines} is restarted",
                evidence=f'DOCKER = "{s.options.get("DOCKER", "")}" (with "1" CSF re-adds the bridge\'s forwarding '
                         "and masquerading, not the published ports)"))
        return out
