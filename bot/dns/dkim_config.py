"""Where the host's DKIM signer takes its selector and key from (pure parsers).

exim (each smtp transport's dkim_selector/dkim_domain/dkim_private_key as
`exim -bP transports` prints them, Debian's DKIM_* macros already substituted), opendkim
(Selector/Domain/KeyFile, or KeyTable + SigningTable), rspamd
(dkim_signing.conf: selector/path, and per-domain blocks). A value exim or
rspamd computes at run time (`${...}`, `$domain`) is kept as written and
marked `dynamic`: the check then asks about the domains it knows, not a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RSPAMD_DBDIR = "/var/lib/rspamd"  # ${DBDIR} in rspamd's own configuration (Debian's and upstream's)
RSPAMD_DEFAULT_PATH = f"{RSPAMD_DBDIR}/dkim/$domain.$selector.key"


@dataclass(frozen=True)
class Signer:
    software: str            # exim | opendkim | rspamd
    selector: str
    domain: str | None       # None: any domain the signer signs for
    key_path: str | None
    source: str              # which file / setting said so

    @property
    def dynamic(self) -> bool:
        return any("$" in (v or "") for v in (self.selector, self.domain, self.key_path))

    def key_path_for(self, domain: str) -> str | None:
        """The key path for this domain: rspamd's $domain/$selector and exim's
        ${dkim_domain}/${dkim_selector} filled in (other expansions stay as written)."""
        if self.key_path is None:
            return None
        path = self.key_path
        for var, value in (("dkim_domain", domain), ("dkim_selector", self.selector),
                           ("domain", domain), ("selector", self.selector)):
            path = path.replace("${" + var + "}", value).replace("$" + var, value)
        return path


def _strip_comments(text: str) -> list[str]:
    return [ln.split("#", 1)[0].rstrip() for ln in text.splitlines()]


def exim_signers(transports: Iterable[tuple[str, Mapping[str, str]]]) -> list[Signer]:
    """(name, options) of exim's smtp transports -> one signer per transport that signs
    (a dkim_selector set). An empty dkim_domain is exim's default: the sender's domain."""
    out = []
    for name, opts in transports:
        selector = opts.get("dkim_selector", "").strip()
        if not selector:
            continue
        domain = opts.get("dkim_domain", "").strip() or None
        key = opts.get("dkim_private_key", "").strip()
        inline = key.startswith("-----")  # the key itself in the config: not a path to read
        path = None if inline or key in ("", "0", "false") else key
        if (selector, domain, path) not in {(s.selector, s.domain, s.key_path) for s in out}:
            out.append(Signer("exim", selector, domain, path, f"exim transport {name}"))
    return out


def _settings(text: str) -> dict[str, str]:
    out = {}
    for line in _strip_comments(text):
        parts = line.split(None, 1)
        if len(parts) == 2:
            out[parts[0].lower()] = parts[1].strip()
    return out


def opendkim_signers(conf: str, keytable: str | None = None, signingtable: str | None = None,
                     source: str = "/etc/opendkim.conf") -> list[Signer]:
    """opendkim.conf; with KeyTable set, the KeyTable's entries (the tables' text given)."""
    s = _settings(conf)
    if "keytable" in s:
        if keytable is None:
            return []
        used = _used_keys(signingtable) if signingtable is not None else None
        out = []
        for line in _strip_comments(keytable):
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].count(":") >= 2 and (used is None or parts[0] in used):
                domain, selector, path = parts[1].split(":", 2)
                out.append(Signer("opendkim", selector, domain, path, f"KeyTable {s['keytable']}"))
        return out
    if "selector" in s and "keyfile" in s:
        return [Signer("opendkim", s["selector"], s.get("domain"), s["keyfile"], source)]
    return []


def opendkim_tables(conf: str) -> list[str]:
    """The KeyTable and SigningTable files opendkim.conf names (file: / refile: stripped;
    tables in a database are not files and are left out)."""
    s = _settings(conf)
    out = []
    for key in ("keytable", "signingtable"):
        kind, sep, path = s.get(key, "").rpartition(":")
        if path.startswith("/") and (not sep or kind in ("file", "refile")):
            out.append(path)
    return out


def _used_keys(signingtable: str) -> set[str]:
    return {parts[1] for line in _strip_comments(signingtable) if len(parts := line.split()) >= 2}


def rspamd_signers(text: str, source: str = "dkim_signing.conf") -> list[Signer]:
    """rspamd's dkim_signing.conf (module file or local.d): global selector/path, domain blocks."""
    body = _ucl_strip(text.replace("${DBDIR}", RSPAMD_DBDIR).replace("$DBDIR", RSPAMD_DBDIR))
    body = re.sub(r"^\s*dkim_signing\s*\{(.*)\}\s*$", r"\1", body, flags=re.S)
    domains_at = re.search(r"\bdomain\s*\{", body)
    top = body[:domains_at.start()] if domains_at else body
    selector = _ucl_value(top, "selector")
    path = _ucl_value(top, "path")
    out = []
    if domains_at:
        for domain, block in _ucl_blocks(body[domains_at.end():]):
            for sel_block in re.findall(r"\{([^{}]*)\}", block) or [block]:
                sel = _ucl_value(sel_block, "selector") or selector
                if sel:
                    out.append(Signer("rspamd", sel, domain, _ucl_value(sel_block, "path") or path, source))
    if selector and (path or not domains_at) and not out:
        out.append(Signer("rspamd", selector, None, path or RSPAMD_DEFAULT_PATH, source))
    return out


def _ucl_strip(text: str) -> str:
    lines = [ln for ln in _strip_comments(text) if not ln.strip().startswith(".include")]
    return "\n".join(lines)


def _ucl_value(text: str, key: str) -> str | None:
    """`key = "value";` at this level of text (inner { } blocks ignored)."""
    flat = re.sub(r"\{[^{}]*\}", "", text)
    m = re.search(rf"(?:^|[\s;{{]){key}\s*[=:]?\s*\"?([^\";\n]+)\"?\s*;?", flat)
    return m.group(1).strip() if m else None


def _ucl_blocks(text: str) -> list[tuple[str, str]]:
    """'name { ... }' pairs at the top level of text (the inside of a domain { } block)."""
    out, i = [], 0
    while (m := re.compile(r"\s*([A-Za-z0-9.\-*_]+)\s*\{").match(text, i)):
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        out.append((m.group(1), text[m.end():j - 1]))
        i = j
    return out
