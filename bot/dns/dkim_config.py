"""Where the host's DKIM signer takes its selector and key from (pure parsers).

exim (Debian's macros DKIM_SELECTOR/DKIM_DOMAIN/DKIM_PRIVATE_KEY or a
transport's dkim_selector/dkim_domain/dkim_private_key), opendkim
(Selector/Domain/KeyFile, or KeyTable + SigningTable), rspamd
(dkim_signing.conf: selector/path, and per-domain blocks). A value exim or
rspamd computes at run time (`${...}`, `$domain`) is kept as written and
marked `dynamic`: the check then asks about the domains it knows, not a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RSPAMD_DEFAULT_PATH = "/var/lib/rspamd/dkim/$domain.$selector.key"


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


def exim_signers(config: str, source: str = "exim config") -> list[Signer]:
    """exim's configuration (all of it, e.g. `exim -bV`'s file or the conf.d files joined)."""
    macros: dict[str, str] = {}
    options: dict[str, str] = {}
    for line in _strip_comments(config):
        m = re.match(r"^([A-Z][A-Z0-9_]*)\s*=\s*(.*)$", line)
        if m:
            macros[m.group(1)] = m.group(2).strip()
            continue
        m = re.match(r"^\s*(dkim_selector|dkim_domain|dkim_private_key)\s*=\s*(.*)$", line)
        if m and not line.lstrip().startswith("."):
            options[m.group(1)] = m.group(2).strip()

    def expand(value: str | None) -> str | None:
        return macros.get(value, value) if value else value
    selector = expand(options.get("dkim_selector")) if "dkim_selector" in options else macros.get("DKIM_SELECTOR")
    if not selector or selector == "DKIM_SELECTOR":
        return []
    domain = expand(options.get("dkim_domain")) or macros.get("DKIM_DOMAIN")
    key = expand(options.get("dkim_private_key")) or macros.get("DKIM_PRIVATE_KEY")
    return [Signer("exim", selector, None if domain in (None, "DKIM_DOMAIN") else domain,
                   None if key in (None, "DKIM_PRIVATE_KEY") else key, source)]


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


def _used_keys(signingtable: str) -> set[str]:
    return {parts[1] for line in _strip_comments(signingtable) if len(parts := line.split()) >= 2}


def rspamd_signers(text: str, source: str = "dkim_signing.conf") -> list[Signer]:
    """rspamd's dkim_signing.conf (module file or local.d): global selector/path, domain blocks."""
    body = _ucl_strip(text)
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
