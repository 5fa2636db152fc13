"""SPF records (RFC 7208): choosing the record, parsing its terms, expanding macros. Pure.

Parsing is strict where the RFC is (an unknown mechanism or a bad address is
a permerror for receivers) and says which term is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")  # RFC 7208 4.6.4
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECH = re.compile(r"^([+\-~?]?)([a-z0-9]+)(?::([^/]*))?((?:/\d+)?(?://\d+)?)$", re.I)
_MOD = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.I)
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-|%", re.I)


class SpfSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    kind: str            # a mechanism name, or "redirect", "exp", or another modifier
    qualifier: str = "pass"
    arg: str = ""        # domain-spec or address, unexpanded
    cidr4: int | None = None
    cidr6: int | None = None
    text: str = ""       # as written

    @property
    def modifier(self) -> bool:
        return self.kind not in MECHANISMS


@dataclass(frozen=True)
class SpfRecord:
    text: str
    terms: tuple[Term, ...]

    @property
    def mechanisms(self) -> list[Term]:
        return [t for t in self.terms if not t.modifier]

    def modifier(self, name: str) -> Term | None:
        return next((t for t in self.terms if t.kind == name), None)


def is_spf(txt: str) -> bool:
    """RFC 7208 4.5: 'v=spf1' exactly, then a space or the end (case-insensitive)."""
    low = txt.lower()
    return low == "v=spf1" or low.startswith("v=spf1 ")


def txt_strings(rdata) -> list[str]:
    """The character-strings of one TXT rdata, decoded."""
    return [s.decode("utf-8", "replace") for s in rdata.strings]


@dataclass(frozen=True)
class Selection:
    """The SPF records among a domain's TXT records, and what their strings got wrong."""

    found: list[str]
    warnings: list[str]
    fixed: str | None = None   # the record as its author meant it, where a split lost a space


def select(txt_records: list[list[str]]) -> Selection:
    """From the TXT records of a domain (each a list of strings): the SPF ones (strings
    concatenated with nothing between, RFC 7208 3.3) and warnings about bad splits."""
    found, warnings, fixed = [], [], None
    for strings in txt_records:
        joined = "".join(strings)
        lost = split_warnings(strings)
        if not is_spf(joined):
            if len(strings) > 1 and is_spf(strings[0].split(" ", 1)[0]) and lost:
                warnings.append(f"TXT strings {strings!r} join into {joined!r}, which is not an SPF record")
                fixed = split_fix(strings)
            continue
        found.append(joined)
        warnings += lost
        fixed = split_fix(strings) if lost else fixed
    return Selection(found, warnings, fixed)


def split_warnings(strings: list[str]) -> list[str]:
    """Boundaries between strings where a space was probably lost: the joined word is not
    a valid term, or both halves are terms of their own ("include:a.test" + "include:b.test")."""
    out = []
    for left, right in zip(strings, strings[1:], strict=False):
        if not left or not right or left[-1] == " " or right[0] == " ":
            continue
        tail, head = left.rsplit(" ", 1)[-1], right.split(" ", 1)[0]
        if not _valid(tail + head) or (_valid(tail) and _valid(head)):
            out.append(f"the strings {left!r} and {right!r} join with no space into "
                       f"{tail + head!r} (DNS joins a TXT record's strings with nothing between)")
    return out


def split_fix(strings: list[str]) -> str:
    """The strings joined with a space at each boundary split_warnings flags."""
    out = strings[0]
    for left, right in zip(strings, strings[1:], strict=False):
        out += (" " if split_warnings([left, right]) else "") + right
    return out


def _valid(word: str) -> bool:
    try:
        parse_term(word)
        return True
    except SpfSyntaxError:
        return False


def parse(text: str) -> SpfRecord:
    """Parse a record (already selected by is_spf). Raises SpfSyntaxError naming the term."""
    words = text.split(" ")
    terms, seen = [], set()
    for word in words[1:]:
        if not word:
            continue
        term = parse_term(word)
        if term.kind in ("redirect", "exp"):
            if term.kind in seen:
                raise SpfSyntaxError(f"{term.kind}= appears twice")
            seen.add(term.kind)
        terms.append(term)
    return SpfRecord(text, tuple(terms))


def parse_term(word: str) -> Term:
    mod = _MOD.match(word)
    if mod and not word.lower().startswith(("ip4:", "ip6:")):
        name, value = mod.group(1).lower(), mod.group(2)
        if name in ("redirect", "exp"):
            check_domain_spec(value, word)
        return Term(name, arg=value, text=word)
    m = _MECH.match(word)
    if not m or m.group(2).lower() not in MECHANISMS:
        raise SpfSyntaxError(f"unknown or malformed term {word!r}")
    qual, kind, arg, cidrs = m.group(1), m.group(2).lower(), m.group(3), m.group(4)
    c4, c6 = _cidrs(cidrs, word) if kind not in ("ip4", "ip6") else (None, None)
    if kind == "all" and (arg is not None or cidrs):
        raise SpfSyntaxError(f"'all' takes no argument: {word!r}")
    if kind in ("include", "exists") and (not arg or cidrs):
        raise SpfSyntaxError(f"{kind} needs a domain and no prefix length: {word!r}")
    if kind in ("ip4", "ip6"):
        return _ip_term(kind, QUALIFIERS[qual or "+"], (arg or "") + (cidrs or ""), word)
    if kind == "ptr" and cidrs:
        raise SpfSyntaxError(f"ptr takes no prefix length: {word!r}")
    if arg is not None:
        check_domain_spec(arg, word)
    return Term(kind, QUALIFIERS[qual or "+"], arg or "", c4, c6, word)


def _cidrs(spec: str, word: str) -> tuple[int | None, int | None]:
    c4 = c6 = None
    m = re.fullmatch(r"(?:/(\d+))?(?://(\d+))?", spec or "")
    if m:
        c4 = int(m.group(1)) if m.group(1) is not None else None
        c6 = int(m.group(2)) if m.group(2) is not None else None
    if (c4 is not None and c4 > 32) or (c6 is not None and c6 > 128):
        raise SpfSyntaxError(f"prefix length out of range: {word!r}")
    return c4, c6


def _ip_term(kind: str, qualifier: str, arg: str, word: str) -> Term:
    try:
        net = ipaddress.ip_network(arg, strict=False)
    except ValueError:
        raise SpfSyntaxError(f"bad address in {word!r}") from None
    if (kind == "ip4") != (net.version == 4):
        raise SpfSyntaxError(f"{kind} with an IPv{net.version} address: {word!r}")
    return Term(kind, qualifier, str(net), text=word)


def check_domain_spec(spec: str, word: str) -> None:
    """A domain-spec: macros well formed; ends in a top label or a macro."""
    if any(m.group(0) == "%" for m in _MACRO.finditer(spec)):
        raise SpfSyntaxError(f"a '%' that starts no macro in {word!r} (macros: %{{s}}..., %%, %_, %-)")
    if not spec or spec.startswith(".") or ".." in spec:
        raise SpfSyntaxError(f"empty or bad domain in {word!r}")


def expand(spec: str, ctx: dict[str, str], exp: bool = False) -> str:
    """RFC 7208 section 7 macro expansion. ctx: s, l, o, d, i, p, v, h (and c, r, t for exp)."""
    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok in ("%%", "%_", "%-"):
            return {"%%": "%", "%_": " ", "%-": "%20"}[tok]
        letter, digits, rev, delims = m.group(1), m.group(2), m.group(3), m.group(4)
        key = letter.lower()
        if key in "crt" and not exp:
            raise SpfSyntaxError(f"macro %{{{letter}}} is only allowed in exp=")
        value = ctx.get(key, "")
        parts = re.split("[" + re.escape(delims or ".") + "]", value)
        if rev:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise SpfSyntaxError("a macro may not keep 0 labels")
            parts = parts[-int(digits):]
        out = ".".join(parts)
        if letter.isupper():
            out = quote(out, safe="")
        return out
    result = _MACRO.sub(one, spec)
    while len(result) > 253 and "." in result:  # 7.3: drop labels from the left
        result = result.split(".", 1)[1]
    return result
