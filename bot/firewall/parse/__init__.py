"""Collected output -> one Ruleset (the model in bot/firewall/model.py).

iptables-save (iptables-nft and legacy tables, v4 and v6) and `nft -j list
ruleset` (native nftables tables) are the rules the kernel applies: they
become the Ruleset, never the same table twice; `ipset save` gives the
elements of the sets iptables' `-m set` names (ipset.py). ufw and firewalld are read
for their own state (ufw.py, firewalld.py): reporting who is in charge and
planning their fixes; the verdicts come from the kernel's tables only.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.firewall.model import Ruleset
from bot.firewall.parse import ipset, iptables, nft
from bot.models import CommandResult

Results = Mapping[tuple[str, ...], CommandResult]

IPT_SAVE = ("iptables-save", "-c")
IP6T_SAVE = ("ip6tables-save", "-c")
# Legacy tables (ip_tables module) apply alongside nft's, and iptables-nft-save never shows
# them. iptables-legacy-save only lists the tables that exist: it creates none.
IPT_LEGACY = ("iptables-legacy-save", "-c")
IP6T_LEGACY = ("ip6tables-legacy-save", "-c")
IPT_VERSION = ("iptables", "-V")
NFT_JSON = ("nft", "-j", "list", "ruleset")
NFT_LISTING = ("nft", "-a", "list", "ruleset")  # rule text as nft prints it, with handles
LANG_C = (("LANG", "C"),)  # the env of commands whose output is parsed as English text
RULESET_COMMANDS = (IPT_VERSION, IPT_SAVE, IP6T_SAVE, IPT_LEGACY, IP6T_LEGACY, NFT_JSON, NFT_LISTING,
                    ipset.COMMAND)


def ok_output(results: Results, argv: tuple[str, ...]) -> str | None:
    """stdout of a command that succeeded, else None."""
    r = results.get(argv)
    return r.stdout if r is not None and r.ok else None


def parse_all(results: Results) -> Ruleset:
    """Every source into one Ruleset; what could not be read goes to problems."""
    merged = Ruleset()
    version = ok_output(results, IPT_VERSION)
    primary = iptables.default_source(version if version is not None else "nf_tables")
    for argv, legacy_argv, family in ((IPT_SAVE, IPT_LEGACY, "ip"), (IP6T_SAVE, IP6T_LEGACY, "ip6")):
        r = results.get(argv)
        if r is not None and r.ok:
            source = primary  # when plain iptables is legacy, its -legacy-save says the same again
            _merge(merged, iptables.parse_save(r.stdout, family=family, source=source))
            legacy = results.get(legacy_argv)
            if iptables.mentions_legacy(r.stdout + r.stderr) and source == "iptables-nft":
                if legacy is None or not legacy.ok:
                    merged.problems.append(f"{argv[0]}: legacy tables are present but could not be read")
            if legacy is not None and legacy.ok and source == "iptables-nft":
                _merge(merged, iptables.parse_save(legacy.stdout, family=family, source="iptables-legacy"))
        elif r is not None and not r.missing:
            merged.problems.append(f"{argv[0]} failed (exit {r.exit_status}): {r.stderr.strip()[:200]}")
    sets = ok_output(results, ipset.COMMAND)
    if sets is not None:  # else `-m set` matches stay not understood (unknown)
        ipset.resolve(merged, ipset.parse_save(sets))
    _merge_nft(merged, results)
    return merged


def _merge(into: Ruleset, part: Ruleset) -> None:
    into.tables += part.tables
    into.problems += part.problems


def _merge_nft(merged: Ruleset, results: Results) -> None:
    r = results.get(NFT_JSON)
    if r is None or r.missing:
        return
    if not r.ok:
        merged.problems.append(f"nft list ruleset failed (exit {r.exit_status}): {r.stderr.strip()[:200]}")
        return
    managed = {(t.family, t.name) for t in merged.tables if t.source == "iptables-nft"}
    _merge(merged, nft.parse_nft_json(r.stdout, skip_tables=frozenset(managed),
                                      listing=ok_output(results, NFT_LISTING)))
