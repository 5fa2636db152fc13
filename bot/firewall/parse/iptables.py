"""`iptables-save -c` / `ip6tables-save -c` (nft-based and legacy) -> model Tables.

Every rule keeps its save line (minus the `[packets:bytes]` prefix) as
`Rule.text`, and its 1-based position in its chain. A match this module does
not understand becomes `Unknown` (the evaluator then forks on it), a target it
does not understand becomes `Verdict("unknown")`; nothing is guessed. Input
that cannot be read as a ruleset at all (a rule outside a table, a table
without COMMIT: truncated output) becomes a `Ruleset.problems` entry, which
makes every verdict unknown.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from dataclasses import dataclass

from bot.firewall.model import (
    XTABLES_HOOKS,
    Addr,
    AddrType,
    Always,
    Chain,
    CtDirection,
    CtState,
    CtStatus,
    CtTuple,
    Iface,
    Match,
    Never,
    Packet,
    Port,
    Proto,
    Rule,
    Ruleset,
    Table,
    Tri,
    Unknown,
    Verdict,
    tri_and,
)
from bot.firewall.parse.ipset import SetMatch

_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s*")
_CHAIN_COUNTERS = re.compile(r"\s*\[\d+:\d+\]\s*$")
TOP_LEVEL = {"-p", "--protocol", "-s", "--source", "--src", "-d", "--destination", "--dst",
             "-i", "--in-interface", "-o", "--out-interface", "-f", "--fragment"}
CONTINUE_TARGETS = {"LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "TCPMSS", "CLASSIFY", "DSCP", "TOS",
                    "TTL", "HL", "SECMARK", "CONNSECMARK", "TRACE", "AUDIT", "CHECKSUM", "TEE", "SET",
                    "IDLETIMER", "LED", "RATEEST", "HMARK", "TCPOPTSTRIP", "ECN", "CT"}
SOURCE_NAT = {"SNAT", "MASQUERADE"}  # the connection still goes where it was going
TERMINAL_TARGETS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}
SERVICES = {"ssh": 22, "smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "urd": 465,
            "imap": 143, "imap2": 143, "imaps": 993, "http": 80, "https": 443, "domain": 53,
            "pop3": 110, "pop3s": 995}
CT_STATES = {"new", "established", "related", "invalid", "untracked"}
TCP_FLAGS = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}


# --- matches this module adds to the model ------------------------------------------------

@dataclass(frozen=True)
class TcpFlags(Match):
    """`--tcp-flags MASK COMP` / `--syn`. A NEW packet is the SYN; a reply is a SYN-ACK or an ACK."""

    mask: frozenset[str]
    comp: frozenset[str]
    negate: bool = False
    text: str = ""

    def _hit(self, flags: frozenset[str]) -> bool:
        return (flags & self.mask) == self.comp

    def test(self, p: Packet) -> Tri:
        if p.proto != "tcp":
            return False
        candidates = {
            "new": [frozenset({"SYN"})],
            "established": [frozenset({"SYN", "ACK"}), frozenset({"ACK"})],
            "untracked": [frozenset({"SYN"}), frozenset({"SYN", "ACK"}), frozenset({"ACK"})],
        }.get(p.ctstate)
        if not candidates:
            return None
        results = {self._hit(f) != self.negate for f in candidates}
        return results.pop() if len(results) == 1 else None


# --- the file ----------------------------------------------------------------------------

def family_of(text: str, default: str = "ip") -> str:
    """'ip6' when the dump is from ip6tables-save (by its header or its addresses)."""
    if "ip6tables-save" in text or re.search(r"icmp6|ipv6-icmp|-s [0-9a-f:]*:[0-9a-f:]*/", text):
        return "ip6"
    return "ip" if "iptables-save" in text else default


def default_source(version_text: str) -> str:
    """Which variant plain `iptables` is, from `iptables -V`: 'iptables v1.8.9 (nf_tables)' -> nft.

    1.8.x prints '(legacy)' for the legacy variant; 1.4.x/1.6.x print no tag and are legacy.
    (iptables-legacy-save's own header has no tag at all: do not look there.)
    """
    return "iptables-nft" if "nf_tables" in version_text else "iptables-legacy"


def save_has_file_option(version_text: str) -> bool:
    """`iptables-save -f FILE` exists from iptables 1.8 on (RHEL 8, Debian 10+); not in 1.4/1.6."""
    m = re.search(r"v(\d+)\.(\d+)", version_text)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (1, 8)


def mentions_legacy(text: str) -> bool:
    """iptables-nft-save warns when legacy tables exist that it does not show."""
    return "iptables-legacy tables present" in text or "ip6tables-legacy tables present" in text


def parse_save(text: str, *, family: str = "ip", source: str = "iptables-nft") -> Ruleset:
    """Parse one iptables-save / ip6tables-save output (any number of tables)."""
    ruleset = Ruleset()
    table: Table | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _comment(line, ruleset)
            continue
        table = _line(line, lineno, table, ruleset, family, source)
    if table is not None:
        ruleset.problems.append(f"{table.label}: no COMMIT at the end (truncated output?)")
        ruleset.tables.append(table)
    return ruleset


def _comment(line: str, ruleset: Ruleset) -> None:
    if "incompatible" in line.lower():
        ruleset.problems.append(f"iptables-save could not show a table: {line.lstrip('# ')}")


def _line(line, lineno, table, ruleset, family, source) -> Table | None:
    if line.startswith("*"):
        if table is not None:
            ruleset.problems.append(f"line {lineno}: table {table.name} has no COMMIT")
            ruleset.tables.append(table)
        return Table(family, line[1:].strip(), source)  # type: ignore[arg-type]
    if table is None:
        ruleset.problems.append(f"line {lineno}: outside any table: {line[:120]}")
        return None
    if line == "COMMIT":
        ruleset.tables.append(table)
        return None
    if line.startswith(":"):
        _declare_chain(line, lineno, table, ruleset)
    else:
        _add_rule(line, lineno, table, ruleset)
    return table


def _declare_chain(line: str, lineno: int, table: Table, ruleset: Ruleset) -> None:
    words = _CHAIN_COUNTERS.sub("", line[1:]).split()
    if not words:
        ruleset.problems.append(f"line {lineno}: empty chain declaration")
        return
    name, policy = words[0], (words[1] if len(words) > 1 else "-")
    hooks = dict(XTABLES_HOOKS.get(table.name, ()))
    chain = Chain(name, type="nat" if table.name == "nat" else "filter")
    if name in hooks:
        chain.hook, chain.priority = name.lower(), hooks[name]  # type: ignore[assignment]
        if policy.upper() not in ("ACCEPT", "DROP"):
            ruleset.problems.append(f"line {lineno}: {table.label} chain {name}: policy {policy!r} not understood")
        chain.policy = "drop" if policy.upper() == "DROP" else "accept"
    elif policy != "-":
        ruleset.problems.append(f"line {lineno}: {table.label}: {name} is not a built-in chain of this table")
    table.chains[name] = chain


def _add_rule(line: str, lineno: int, table: Table, ruleset: Ruleset) -> None:
    packets = nbytes = None
    m = _COUNTERS.match(line)
    if m:
        packets, nbytes = int(m.group(1)), int(m.group(2))
        line = line[m.end():]
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
        bad = True
    else:
        bad = False
    if len(words) < 2 or words[0] not in ("-A", "--append"):
        ruleset.problems.append(f"line {lineno}: not a rule: {line[:120]}")
        return
    chain = table.chains.get(words[1])
    if chain is None:
        ruleset.problems.append(f"line {lineno}: rule for undeclared chain {words[1]!r}")
        return
    rule = Rule((Unknown(text=line),), Verdict("unknown"), line) if bad else parse_rule(words[2:], line, table)
    rule.position, rule.packets, rule.bytes = len(chain.rules) + 1, packets, nbytes
    chain.rules.append(rule)


# --- one rule ----------------------------------------------------------------------------

def parse_rule(words: list[str], text: str, table: Table) -> Rule:
    """The words after `-A CHAIN` -> Rule (never raises)."""
    try:
        matches, verdict = _parse_words(words, table)
    except (ValueError, IndexError) as e:
        return Rule((Unknown(text=f"{text} ({e})"),), Verdict("unknown"), text)
    return Rule(tuple(matches), verdict, text)


def _parse_words(words: list[str], table: Table) -> tuple[list[Match], Verdict]:
    matches: list[Match] = []
    proto: str | None = None
    i = 0
    while i < len(words):
        negate = words[i] == "!"
        if negate:
            i += 1
        opt = words[i]
        if opt in ("-j", "--jump", "-g", "--goto"):
            if negate:
                raise ValueError("negated target")
            return matches, _target(opt, words[i + 1:], table)
        if opt in ("-m", "--match"):
            j = _module_end(words, i + 2)
            matches.append(_module(words[i + 1], words[i + 2:j], negate, table))
            i = j
            continue
        if opt in TOP_LEVEL:
            i, match, proto = _top_level(words, i, negate, proto)
            matches.append(match)
            continue
        if opt.startswith("--") and proto in ("tcp", "udp"):  # `-p tcp --dport 25` without -m tcp
            j = _module_end(words, i + 1)
            matches.append(_module(proto, ([*(["!"] if negate else []), *words[i:j]]), False, table))
            i = j
            continue
        matches.append(Unknown(text=" ".join(words[i - negate:])))
        return matches, Verdict("unknown")
    return matches, Verdict("continue")


def _module_end(words: list[str], i: int) -> int:
    while i < len(words) and words[i] not in ("-m", "--match", "-j", "--jump", "-g", "--goto"):
        if words[i] == "!" and i + 1 < len(words) and words[i + 1] in ("-m", "--match", "-j", "-g"):
            break
        i += 1
    return i


def _top_level(words: list[str], i: int, negate: bool, proto: str | None):
    opt, text = words[i], " ".join(words[i - negate:i + 2])
    if opt in ("-f", "--fragment"):
        return i + 1, (Always(text=text) if negate else Never(text=text)), proto
    value = words[i + 1]
    if opt in ("-p", "--protocol"):
        value = value.lower()
        return i + 2, Proto(frozenset({value}), negate, text), (None if negate else value)
    if opt in ("-i", "--in-interface", "-o", "--out-interface"):
        field = "iif" if opt in ("-i", "--in-interface") else "oif"
        return i + 2, Iface(field, tuple(value.split(",")), negate, text), proto
    field = "saddr" if opt in ("-s", "--source", "--src") else "daddr"
    return i + 2, Addr(field, tuple(value.split(",")), negate, text), proto


# --- match modules -------------------------------------------------------------------------

def _module(name: str, args: list[str], negate: bool, table: Table) -> Match:
    text = " ".join(["-m", name, *args])
    if negate:
        return Unknown(text=f"! {text}")
    if name == "comment":
        return Always(text=text)
    parser = MODULES.get(name)
    if parser is None:
        return Unknown(text=text)
    try:
        return parser(_options(args), text)
    except (ValueError, IndexError, KeyError):
        return Unknown(text=text)


def _options(args: list[str]) -> list[tuple[str, list[str], bool]]:
    """['!', '--dport', '25', '--syn'] -> [('--dport', ['25'], True), ('--syn', [], False)]."""
    out: list[tuple[str, list[str], bool]] = []
    i = 0
    while i < len(args):
        negate = args[i] == "!"
        i += negate
        if i >= len(args) or not args[i].startswith("--"):
            raise ValueError(f"unexpected word {args[i] if i < len(args) else '!'}")
        j = i + 1
        while j < len(args) and not args[j].startswith("--") and args[j] != "!":
            j += 1
        out.append((args[i], args[i + 1:j], negate))
        i = j
    return out


def _all_of(matches: list[Match], text: str) -> Match:
    if len(matches) == 1:
        return matches[0]
    return _Conj(tuple(matches), text)


@dataclass(frozen=True)
class _Conj(Match):
    """Several options of one module (`-m tcp --sport 1024: --dport 25`): all must hold."""

    parts: tuple[Match, ...]
    text: str = ""

    def test(self, p: Packet) -> Tri:
        return tri_and(m.test(p) for m in self.parts)


def port_ranges(value: str) -> tuple[tuple[int, int], ...]:
    """'25', '1024:65535', ':1023', '25,465:587' -> ranges (ValueError when unreadable)."""
    out = []
    for item in value.split(","):
        lo, sep, hi = item.partition(":")
        a = _port(lo) if lo else 0
        b = (_port(hi) if hi else 65535) if sep else a
        if a > b:
            raise ValueError(f"bad range {item}")
        out.append((a, b))
    return tuple(out)


def _port(word: str) -> int:
    value = SERVICES[word.lower()] if not word.isdigit() else int(word)
    if not 0 <= value <= 65535:
        raise ValueError(f"bad port {word}")
    return value


def _tcp_udp(opts, text: str) -> Match:
    parts: list[Match] = []
    for opt, vals, neg in opts:
        if opt in ("--dport", "--destination-port", "--sport", "--source-port"):
            field = "dport" if opt in ("--dport", "--destination-port") else "sport"
            parts.append(Port(field, port_ranges(vals[0]), neg, text))
        elif opt == "--syn":
            parts.append(TcpFlags(frozenset({"FIN", "SYN", "RST", "ACK"}), frozenset({"SYN"}), neg, text))
        elif opt == "--tcp-flags":
            parts.append(TcpFlags(_flags(vals[0]), _flags(vals[1]), neg, text))
        else:
            parts.append(Unknown(text=text))
    return _all_of(parts, text) if parts else Always(text=text)


def _flags(word: str) -> frozenset[str]:
    names = {w.upper() for w in word.split(",")}
    if "ALL" in names:
        return frozenset(TCP_FLAGS)
    if "NONE" in names:
        return frozenset()
    if not names <= TCP_FLAGS:
        raise ValueError(f"bad tcp flags {word}")
    return frozenset(names)


def _multiport(opts, text: str) -> Match:
    parts: list[Match] = []
    for opt, vals, neg in opts:
        ranges = port_ranges(vals[0])
        if opt in ("--dports", "--destination-ports"):
            parts.append(Port("dport", ranges, neg, text))
        elif opt in ("--sports", "--source-ports"):
            parts.append(Port("sport", ranges, neg, text))
        elif opt == "--ports":
            parts.append(_EitherPort(ranges, neg, text))
        else:
            parts.append(Unknown(text=text))
    return _all_of(parts, text)


@dataclass(frozen=True)
class _EitherPort(Match):
    """multiport --ports: source OR destination port in the set."""

    ranges: tuple[tuple[int, int], ...]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        if p.proto not in ("tcp", "udp", "sctp"):
            return False
        hit = any(lo <= v <= hi for lo, hi in self.ranges for v in (p.dport, p.sport))
        return hit != self.negate


CT_TUPLE_OPTIONS = {  # conntrack's --ctorigdst etc.: (tuple, field)
    f"--ct{tag}{part}": ("original" if tag == "orig" else "reply", field)
    for tag in ("orig", "repl")
    for part, field in (("src", "saddr"), ("dst", "daddr"), ("srcport", "sport"), ("dstport", "dport"))}


def _state(opts, text: str) -> Match:
    parts: list[Match] = []
    for opt, vals, neg in opts:
        if opt in ("--state", "--ctstate"):
            states = frozenset(s.lower() for s in vals[0].split(","))
            parts.append(CtState(states, neg, text) if states <= CT_STATES else Unknown(text=text))
        elif opt in CT_TUPLE_OPTIONS:
            tuple_dir, field = CT_TUPLE_OPTIONS[opt]
            if field in ("sport", "dport"):
                parts.append(CtTuple(tuple_dir, field, ranges=port_ranges(vals[0]), negate=neg, text=text))
            else:
                parts.append(CtTuple(tuple_dir, field, networks=tuple(vals[0].split(",")), negate=neg, text=text))
        elif opt == "--ctstatus" and vals[0].upper() == "DNAT":
            parts.append(CtStatus(neg, text))
        elif opt == "--ctdir" and vals[0].upper() in ("ORIGINAL", "REPLY"):
            parts.append(CtDirection(vals[0].upper() == "REPLY", neg, text))
        else:
            parts.append(Unknown(text=text))
    return _all_of(parts, text)


def _addrtype(opts, text: str) -> Match:
    parts: list[Match] = []
    for opt, vals, neg in opts:
        if opt in ("--dst-type", "--src-type"):
            field = "daddr" if opt == "--dst-type" else "saddr"
            parts.append(AddrType(field, frozenset(t.upper() for t in vals[0].split(",")), neg, text))
        else:
            parts.append(Unknown(text=text))
    return _all_of(parts, text)


def _set(opts, text: str) -> Match:
    """`--match-set NAME src|dst`: the set's elements come from `ipset save` (parse/ipset.py)."""
    if len(opts) != 1 or opts[0][0] != "--match-set" or len(opts[0][1]) != 2:
        return Unknown(text=text)  # --return-nomatch, counters, packet/byte conditions: not modelled
    _, (name, flags), neg = opts[0]
    return SetMatch(text=text, name=name, flags=tuple(flags.split(",")), negate=neg)


def _never(opts, text: str) -> Match:
    return Never(text=text)  # icmp / icmp6 types: never a TCP packet


# IPv6 extension-header matches: a plain TCP connection's packets carry no such header,
# and these matches are false without one (negated or not).
EXTENSION_HEADERS = ("rt", "frag", "hbh", "dst", "ah", "esp", "mh")
MODULES = {name: _never for name in EXTENSION_HEADERS} | {"tcp": _tcp_udp, "udp": _tcp_udp, "multiport": _multiport, "state": _state,
           "conntrack": _state, "addrtype": _addrtype, "set": _set, "icmp": _never,
           "icmp6": _never, "icmpv6": _never}


# --- targets -----------------------------------------------------------------------------

def _target(opt: str, args: list[str], table: Table) -> Verdict:
    if not args:
        return Verdict("unknown")
    name, rest = args[0], args[1:]
    if opt in ("-g", "--goto"):
        return Verdict("goto", name) if name in table.chains else Verdict("unknown")
    if name in TERMINAL_TARGETS:
        return Verdict(TERMINAL_TARGETS[name])  # type: ignore[arg-type]
    if name in table.chains and not table.chains[name].is_base:
        return Verdict("jump", name)
    if name == "NOTRACK" or (name == "CT" and "--notrack" in rest):
        return Verdict("continue", set_ctstate="untracked")
    if name in CONTINUE_TARGETS or (table.name == "nat" and name in SOURCE_NAT):
        return Verdict("continue")
    if table.name == "nat" and name in ("DNAT", "REDIRECT"):
        return _dnat(name, rest)
    return Verdict("unknown")  # NETMAP, TPROXY, queues...: not modelled


def _dnat(name: str, args: list[str]) -> Verdict:
    """`DNAT --to-destination A[:P]` / `REDIRECT --to-ports P`: one address and port, else unknown
    (ranges, several destinations, --random: where the connection goes is not one place)."""
    if len(args) != 2 or args[0] != ("--to-destination" if name == "DNAT" else "--to-ports"):
        return Verdict("unknown")
    value = args[1]
    try:
        if name == "REDIRECT":
            return Verdict("dnat", to_port=_port(value))
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?|([0-9a-fA-F:]*:[0-9a-fA-F:.]*)", value)
        if m is None:
            return Verdict("unknown")
        addr = m.group(1) or m.group(3) or m.group(5)
        port = m.group(2) or m.group(4)
        return Verdict("dnat", to_addr=str(ipaddress.ip_address(addr)), to_port=_port(port) if port else None)
    except (ValueError, KeyError):
        return Verdict("unknown")


# --- normalization (preconditions) --------------------------------------------------------

def normalize_iptables_save(text: str) -> str:
    """iptables-save output without comments, dates and counters: stable across runs."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = _COUNTERS.sub("", line)
        if line.startswith(":"):
            line = _CHAIN_COUNTERS.sub("", line)
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def sha256_normalized(text: str) -> str:
    return hashlib.sha256(normalize_iptables_save(text).encode()).hexdigest()
