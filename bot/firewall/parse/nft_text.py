"""A rule as `nft -a list ruleset` prints it: taken from that listing by handle, else rebuilt from JSON.

`rule_lines(listing)` reads the text listing (`nft -a list ruleset`) into
{(family, table, chain, handle): line}; `render_rule(exprs)` rebuilds a close
equivalent from the JSON expressions when no listing was collected.
"""

from __future__ import annotations

import re
from typing import Any

from bot.firewall.parse.nft_expr import compact

_TABLE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*\{")
_CHAIN = re.compile(r"^\s*chain\s+(\S+)\s*\{")
_HANDLE = re.compile(r"\s+# handle (\d+)\s*$")

RuleKey = tuple[str, str, str, int]


def rule_lines(listing: str) -> dict[RuleKey, str]:
    """`nft -a list ruleset` -> {(family, table, chain, handle): rule text without the handle comment}."""
    out: dict[RuleKey, str] = {}
    family = table = chain = None
    for raw in listing.splitlines():
        head = raw.split(" # handle")[0]
        if m := _TABLE.match(head):
            family, table, chain = m.group(1), _unquote(m.group(2)), None
            continue
        if m := _CHAIN.match(head):
            chain = _unquote(m.group(1))
            continue
        h = _HANDLE.search(raw)
        if h and family and table and chain and raw.startswith("\t\t") and not raw.startswith("\t\t\t"):
            out[(family, table, chain, int(h.group(1)))] = raw[: h.start()].strip()
    return out


def _unquote(name: str) -> str:
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name


# --- rebuilt from JSON ------------------------------------------------------------------------

def render_rule(exprs: Any, comment: Any = None) -> str:
    if not isinstance(exprs, list):
        return compact(exprs)
    words = [_expr(e) for e in exprs]
    if isinstance(comment, str):
        words.append(f'comment "{comment}"')
    return " ".join(w for w in words if w)


def _expr(e: Any) -> str:
    if not isinstance(e, dict) or len(e) != 1:
        return compact(e)
    kind, arg = next(iter(e.items()))
    if kind == "match" and isinstance(arg, dict):
        op = arg.get("op", "==")
        op = "" if op in ("==", "in") else f"{op} "
        return f"{_value(arg.get('left'))} {op}{_value(arg.get('right'))}"
    if kind in ("accept", "drop", "continue", "return", "notrack", "masquerade"):
        return kind
    if kind in ("jump", "goto") and isinstance(arg, dict):
        return f"{kind} {arg.get('target')}"
    if kind == "counter":
        return "counter"
    if kind == "reject":
        return "reject" + (f" with {arg.get('type')}" if isinstance(arg, dict) and arg.get("type") else "")
    if kind == "log":
        prefix = arg.get("prefix") if isinstance(arg, dict) else None
        return f'log prefix "{prefix}"' if prefix else "log"
    if kind == "vmap" and isinstance(arg, dict):
        return f"{_value(arg.get('key'))} vmap {_value(arg.get('data'))}"
    return f"{kind} {compact(arg)}" if arg is not None else kind


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return compact(v)
    if isinstance(v, int | str):
        return str(v)
    if isinstance(v, list):
        return ",".join(_value(x) for x in v)
    if not isinstance(v, dict) or len(v) != 1:
        return compact(v)
    kind, arg = next(iter(v.items()))
    if kind == "payload" and isinstance(arg, dict):
        return f"{arg.get('protocol')} {arg.get('field')}"
    if kind == "meta" and isinstance(arg, dict):
        key = arg.get("key")
        return str(key) if key in ("iifname", "oifname", "iif", "oif", "mark") else f"meta {key}"
    if kind == "ct" and isinstance(arg, dict):
        return f"ct {arg.get('key')}"
    if kind == "set":
        items = arg if isinstance(arg, list) else [arg]
        return "{ " + ", ".join(_elem(x) for x in items) + " }"
    if kind in ("range", "prefix"):
        return _elem(v)
    return compact(v)


def _elem(x: Any) -> str:
    if isinstance(x, dict) and isinstance(x.get("range"), list) and len(x["range"]) == 2:
        return f"{_value(x['range'][0])}-{_value(x['range'][1])}"
    if isinstance(x, dict) and isinstance(x.get("prefix"), dict):
        return f"{x['prefix'].get('addr')}/{x['prefix'].get('len')}"
    if isinstance(x, list) and len(x) == 2:  # map element: key : verdict
        return f"{_elem(x[0])} : {_expr(x[1]) if isinstance(x[1], dict) else _value(x[1])}"
    return _value(x)
