"""`nft -j list ruleset` (nftables 1.0.x JSON, as on Debian 12) -> model Tables (source "nft").

Families ip, ip6 and inet become Tables; base chains keep their hook,
priority (numbers, or names such as "filter - 10" when the JSON carries
names), policy and type; every rule keeps its handle, its 1-based position
and its text as `nft -a list ruleset` prints it (taken from that listing by
handle when it is given, else rebuilt from the JSON). Expressions are read by
bot/firewall/parse/nft_expr.py: what it does not understand is Unknown.

Tables iptables-nft manages are read from iptables-save (nft's JSON drops
their match details): pass them as `skip_tables`; they are skipped with a
note. A table with xt expressions that was not skipped keeps those rules
with Unknown matches. netdev / bridge / arp tables and ingress chains with
rules are not modelled: they become problems (every verdict unknown) rather
than being ignored. Malformed input never raises: it becomes problems.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bot.firewall.model import Chain, Rule, Ruleset, Table, Unknown, Verdict
from bot.firewall.parse.nft_expr import (
    Sets,
    compact,
    match_expr,
    set_elements,
    statement,
    verdict_of,
)
from bot.firewall.parse.nft_text import render_rule, rule_lines

FAMILIES = ("ip", "ip6", "inet")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                  "srcnat": 100, "out": 100, "bridge": -200}
_PRIO = re.compile(r"^\s*([a-z]+)\s*(?:([+-])\s*(\d+))?\s*$")
TableKey = tuple[str, str]


@dataclass
class NftParse:
    ruleset: Ruleset
    notes: list[str] = field(default_factory=list)  # what was skipped, and why (not problems)
    xt_tables: set[TableKey] = field(default_factory=set)  # tables holding iptables-nft (xt) rules


def parse_nft_json(text: str, skip_tables: set[TableKey] | frozenset[TableKey] = frozenset(),
                   listing: str | None = None) -> Ruleset:
    """The native nftables tables of `nft -j list ruleset` as a Ruleset (never raises)."""
    return parse_nft(text, skip_tables, listing).ruleset


def parse_nft(text: str, skip_tables: set[TableKey] | frozenset[TableKey] = frozenset(),
              listing: str | None = None) -> NftParse:
    """As parse_nft_json, with notes on skipped tables and which tables hold xt (iptables-nft) rules."""
    out = NftParse(Ruleset())
    items = _items(text, out.ruleset.problems)
    if items is None:
        return out
    lines = rule_lines(listing) if listing else {}
    tables = _tables(items, skip_tables, out)
    sets = _sets(items)
    _chains(items, tables, out.ruleset.problems)
    _rules(items, tables, sets, lines, out)
    for t in tables.values():
        _renumber(t)
    out.ruleset.tables = list(tables.values())
    return out


def xt_tables(text: str) -> set[TableKey]:
    """(family, name) of the tables whose rules use xt expressions (iptables-nft's)."""
    return parse_nft(text).xt_tables


def _items(text: str, problems: list[str]) -> list[dict] | None:
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as e:
        problems.append(f"nft -j list ruleset: not JSON ({str(e)[:100]})")
        return None
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        problems.append("nft -j list ruleset: no 'nftables' list in the JSON")
        return None
    bad = [i for i in items if not isinstance(i, dict) or len(i) != 1 or not isinstance(next(iter(i.values())), dict)]
    if bad:
        problems.append(f"nft -j list ruleset: {len(bad)} entries not understood, e.g. {compact(bad[0])}")
    return [i for i in items if i not in bad]


def _key(obj: dict, name_field: str = "table") -> TableKey | None:
    fam, name = obj.get("family"), obj.get(name_field)
    return (fam, name) if isinstance(fam, str) and isinstance(name, str) else None


def _tables(items: list[dict], skip: set[TableKey] | frozenset[TableKey], out: NftParse) -> dict[TableKey, Table]:
    tables: dict[TableKey, Table] = {}
    for item in items:
        obj = item.get("table")
        key = _key(obj, "name") if isinstance(obj, dict) else None
        if key is None:
            if obj is not None:
                out.ruleset.problems.append(f"nft: table entry not understood: {compact(obj)}")
            continue
        if key in skip:
            out.notes.append(f"nft {key[0]} {key[1]}: managed by iptables-nft, read from iptables-save")
        elif key[0] not in FAMILIES:
            _other_family(items, key, out)
        else:
            tables[key] = Table(key[0], key[1], "nft")  # type: ignore[arg-type]
    for item in items:
        if "rule" in item and isinstance(item["rule"], dict) and _has_xt(item["rule"].get("expr")):
            if (k := _key(item["rule"])) is not None:
                out.xt_tables.add(k)
    return tables


def _has_xt(exprs: Any) -> bool:
    return isinstance(exprs, list) and any(isinstance(e, dict) and "xt" in e for e in exprs)


def _other_family(items: list[dict], key: TableKey, out: NftParse) -> None:
    """netdev / bridge / arp: not modelled. Harmless when empty, else every verdict is unknown."""
    busy = any(isinstance(i.get("rule"), dict) and _key(i["rule"]) == key for i in items) or any(
        isinstance(i.get("chain"), dict) and _key(i["chain"]) == key and i["chain"].get("policy") == "drop"
        for i in items)
    if busy and key[0] in ("netdev", "bridge"):
        out.ruleset.problems.append(f"nft {key[0]} {key[1]}: {key[0]} tables are not analysed (it has rules)")
    else:
        out.notes.append(f"nft {key[0]} {key[1]}: {key[0]} table not analysed (does not filter TCP to this host)")


def _sets(items: list[dict]) -> dict[TableKey, Sets]:
    sets: dict[TableKey, Sets] = {}
    for item in items:
        for kind in ("set", "map"):
            obj = item.get(kind)
            if isinstance(obj, dict) and (key := _key(obj)) and isinstance(obj.get("name"), str):
                sets.setdefault(key, Sets({})).elems[obj["name"]] = set_elements(obj)
    return sets


def priority(value: Any) -> int | None:
    """60, "filter", "filter - 10", "mangle + 5" -> an int; None when not understood."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lstrip("-").isdigit():
            return int(value)
        m = _PRIO.match(value)
        if m and m.group(1) in PRIORITY_NAMES:
            offset = int(m.group(3) or 0)
            return PRIORITY_NAMES[m.group(1)] + (-offset if m.group(2) == "-" else offset)
    return None


def _chains(items: list[dict], tables: dict[TableKey, Table], problems: list[str]) -> None:
    for item in items:
        obj = item.get("chain")
        if not isinstance(obj, dict) or (table := tables.get(_key(obj) or ("", ""))) is None:
            continue
        name = obj.get("name")
        if not isinstance(name, str):
            problems.append(f"nft: chain without a name: {compact(obj)}")
            continue
        chain = Chain(name)
        if "hook" in obj:
            _base(chain, obj, table, problems)
        table.chains[name] = chain


def _base(chain: Chain, obj: dict, table: Table, problems: list[str]) -> None:
    hook, prio, policy, kind = obj.get("hook"), priority(obj.get("prio")), obj.get("policy", "accept"), obj.get("type")
    where = f"nft {table.family} {table.name} chain {chain.name}"
    if hook == "ingress":  # runs before prerouting; not modelled (kept as a chain without hook)
        if policy == "drop":
            problems.append(f"{where}: ingress hook with policy drop is not analysed")
        return
    if hook not in HOOKS or prio is None or policy not in ("accept", "drop") or kind not in ("filter", "nat", "route"):
        problems.append(f"{where}: base chain not understood: {compact(obj)}")
        return
    chain.hook, chain.priority, chain.policy, chain.type = hook, prio, policy, kind


def _rules(items, tables, sets, lines, out: NftParse) -> None:
    for item in items:
        obj = item.get("rule")
        if not isinstance(obj, dict):
            continue
        key = _key(obj)
        table = tables.get(key) if key else None
        if table is None:
            continue
        chain = table.chains.get(obj.get("chain")) if isinstance(obj.get("chain"), str) else None
        if chain is None:
            out.ruleset.problems.append(f"nft: rule in an unknown chain: {compact(obj)}")
            continue
        handle = obj.get("handle") if isinstance(obj.get("handle"), int) else None
        text = lines.get((table.family, table.name, chain.name, handle or -1)) or render_rule(
            obj.get("expr"), obj.get("comment"))
        chain.rules += rules_of(obj.get("expr"), text, handle, chain, sets.get(key, Sets({})))
        if chain.hook is None and chain.rules and _is_ingress(items, key, chain.name):
            out.ruleset.problems.append(f"nft {table.family} {table.name} chain {chain.name}: ingress rules "
                                        "are not analysed")


def _is_ingress(items: list[dict], key: TableKey, name: str) -> bool:
    return any(isinstance(i.get("chain"), dict) and _key(i["chain"]) == key and i["chain"].get("name") == name
               and i["chain"].get("hook") == "ingress" for i in items)


def rules_of(exprs: Any, text: str, handle: int | None, chain: Chain, sets: Sets) -> list[Rule]:
    """One JSON rule -> model Rules (a verdict map gives one Rule per element, same handle)."""
    if not isinstance(exprs, list):
        return [Rule((Unknown(text=f"{text} (no expressions)"),), Verdict("unknown"), text, handle=handle)]
    matches: list = []
    for e in exprs:
        if not isinstance(e, dict) or len(e) != 1:
            return [Rule((*matches, Unknown(text=f"{text} ({compact(e)})")), Verdict("unknown"), text, handle=handle)]
        kind, arg = next(iter(e.items()))
        if kind == "match":
            matches += match_expr(arg, sets, text)
        elif kind == "vmap":
            return _vmap(arg, matches, text, handle, sets)
        elif kind == "xt":
            matches.append(Unknown(text=f"{text} (iptables-nft xt {compact(arg)})"))
        else:
            implied, verdict = statement(e, chain.hook, chain.priority, text)
            if implied is not None:
                matches.append(implied)
            if verdict is not None and (verdict.kind != "continue" or verdict.set_ctstate):
                return [Rule(tuple(matches), verdict, text, handle=handle)]
    return [Rule(tuple(matches), Verdict("continue"), text, handle=handle)]


def _vmap(arg: Any, before: list, text: str, handle: int | None, sets: Sets) -> list[Rule]:
    """`KEY vmap { a : accept, b : drop }` -> one rule per element: KEY == a accept; KEY == b drop."""
    try:
        data = arg["data"]
        elems = sets.get(data) if isinstance(data, str) else data["set"]
        out = []
        for elem in elems:
            key_value, target = elem
            verdict = verdict_of(target)
            if verdict is None:
                raise ValueError(f"map value {compact(target)}")
            matches = match_expr({"op": "==", "left": arg["key"], "right": key_value}, sets, text)
            out.append(Rule((*before, *matches), verdict, text, handle=handle))
        return out
    except Exception as e:  # noqa: BLE001 - anything odd in a map: the rule is not understood
        return [Rule((*before, Unknown(text=f"{text} (verdict map: {str(e)[:80]})")), Verdict("unknown"), text,
                     handle=handle)]


def _renumber(table: Table) -> None:
    for chain in table.chains.values():
        position, last = 0, object()
        for rule in chain.rules:
            if rule.handle is None or rule.handle != last:
                position += 1
            last = rule.handle
            rule.position = position


# --- normalisation (plan preconditions) --------------------------------------------------------

_COUNTER = re.compile(r"\s*counter packets \d+ bytes \d+")
_EXPIRES = re.compile(r"\s*expires [0-9dhms]+")
_USED = re.compile(r"\s*used \d+ [a-z]*bytes")
_TABLE_HANDLE = re.compile(r"^(table \S+ \S+ \{) # handle \d+$")


def normalize_nft(text: str) -> str:
    """`nft -a list ...` text without counters, quota use, set expiry countdowns, table handles
    and blank lines: stable across runs, and the same for `list chain` cut from `list ruleset`."""
    out = []
    for raw in text.splitlines():
        line = _USED.sub("", _EXPIRES.sub("", _COUNTER.sub(" counter", raw))).rstrip()
        line = _TABLE_HANDLE.sub(r"\1", line)
        if line.strip():
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def chain_listing(listing: str, family: str, table: str, chain: str) -> str | None:
    """`nft -a list chain F T C` as cut from `nft -a list ruleset` (None when not in it)."""
    out, in_table, in_chain = [], False, False
    for line in listing.splitlines():
        if line.startswith("table "):
            in_table = line.split(" # handle")[0] in (f"table {family} {table} {{",)
            continue
        if in_table and line.startswith(f"\tchain {chain} {{"):
            in_chain = True
        if in_chain:
            out.append(line)
            if line == "\t}":
                return f"table {family} {table} {{\n" + "\n".join(out) + "\n}\n"
    return None
