"""The evaluator's walk on hand-built models (the lab corpus checks it against the kernel)."""

from __future__ import annotations

from bot.firewall.analysis import Endpoints, findings_for, port_verdict
from bot.firewall.evaluate import evaluate
from bot.firewall.model import (
    Addr,
    Chain,
    CtState,
    Packet,
    Port,
    Proto,
    Rule,
    Ruleset,
    Table,
    Unknown,
    Verdict,
)

TCP = Proto(frozenset({"tcp"}))
PROBER, HOST = "198.18.9.1", "198.18.9.2"


def rule(*matches, verdict="drop", chain=None, text="", pos=1, set_ct=None):
    return Rule(tuple(matches), Verdict(verdict, chain, set_ct), text or f"rule {pos}", pos)


def dport(*ports):
    return Port("dport", tuple((p, p) for p in ports))


def table(chains, name="filter", family="ip", source="iptables-nft"):
    return Table(family, name, source, {c.name: c for c in chains})


def syn(port=25, src=PROBER, ct="new"):
    return Packet("inbound", "ipv4", port, src, HOST, iif="eth0", ctstate=ct)


def test_empty_ruleset_allows():
    assert evaluate(Ruleset(), syn()).verdict == "allow"


def test_policy_drop_is_named_as_the_policy():
    rs = Ruleset([table([Chain("INPUT", [rule(TCP, dport(22), verdict="accept")], "input", 0, "drop")])])
    d = evaluate(rs, syn(25))
    assert d.verdict == "block" and d.blocked_by == "iptables -t filter: policy DROP of chain INPUT"
    assert evaluate(rs, syn(22)).verdict == "allow"


def test_jump_return_and_goto():
    user = Chain("mail", [rule(Addr("saddr", ("10.0.0.0/8",)), verdict="return"),
                          rule(TCP, dport(25), text="-A mail -p tcp --dport 25 -j DROP")])
    inp = Chain("INPUT", [rule(verdict="jump", chain="mail"), rule(verdict="accept", pos=2)], "input", 0, "drop")
    rs = Ruleset([table([inp, user])])
    assert evaluate(rs, syn(25)).blocked_by.endswith("-A mail -p tcp --dport 25 -j DROP")
    assert evaluate(rs, syn(25, src="10.1.2.3")).verdict == "allow"  # returned, then rule 2 accepts
    # goto: the end of the target chain returns to INPUT's caller: the policy
    inp.rules = [rule(verdict="goto", chain="mail"), rule(verdict="accept", pos=2)]
    assert evaluate(rs, syn(587)).blocked_by == "iptables -t filter: policy DROP of chain INPUT"


def test_accept_ends_only_its_own_base_chain():
    first = table([Chain("input", [rule(verdict="accept")], "input", -10, "accept")], name="a", source="nft", family="inet")
    second = table([Chain("input", [rule(TCP, dport(25), text="tcp dport 25 drop")], "input", 0, "accept")],
                   name="b", source="nft", family="inet")
    d = evaluate(Ruleset([first, second]), syn(25))
    assert d.verdict == "block" and "nft inet b" in d.blocked_by


def test_unknown_match_forks_and_is_certain_only_when_branches_agree():
    limit = Unknown(text="-m recent --update")
    rs = Ruleset([table([Chain("INPUT", [rule(limit, verdict="continue"), rule(TCP, dport(25))], "input", 0, "accept")])])
    assert evaluate(rs, syn(25)).verdict == "block"  # a LOG-like rule cannot change the outcome
    rs.tables[0].chains["INPUT"].rules = [rule(limit, TCP, dport(25))]
    d = evaluate(rs, syn(25))
    assert d.verdict == "unknown" and "-m recent --update" in d.reasons[0]
    assert evaluate(rs, syn(143)).verdict == "allow"  # the unknown rule is for port 25 only


def test_notrack_makes_later_new_only_accepts_miss():
    raw = table([Chain("PREROUTING", [rule(verdict="continue", set_ct="untracked")], "prerouting", -300, "accept")], name="raw")
    filt = table([Chain("INPUT", [rule(CtState(frozenset({"new"})), TCP, dport(25), verdict="accept")], "input", 0, "drop")])
    assert evaluate(Ruleset([raw, filt]), syn(25)).verdict == "block"
    assert evaluate(Ruleset([filt]), syn(25)).verdict == "allow"


def test_problems_make_everything_unknown():
    assert evaluate(Ruleset([], ["legacy tables exist but iptables-legacy-save failed"]), syn()).verdict == "unknown"


def _guide_case_2(with_output_established=True):
    est = CtState(frozenset({"related", "established"}))
    inp = Chain("INPUT", [rule(est, verdict="accept"), rule(TCP, dport(22), verdict="accept", pos=2),
                          rule(TCP, dport(25), verdict="accept", pos=3)], "input", 0, "drop")
    out = Chain("OUTPUT", [rule(est, verdict="accept")] if with_output_established else [], "output", 0, "drop")
    return Ruleset([table([inp, out])])


def test_replies_count_inbound_and_outbound():
    ends = Endpoints(HOST, PROBER, "eth0", frozenset({HOST}))
    assert port_verdict(_guide_case_2(), ("inbound", "ipv4", 25), ends).verdict == "allow"
    v = port_verdict(_guide_case_2(False), ("inbound", "ipv4", 25), ends)
    assert v.verdict == "block" and v.reply_blocked  # SYN accepted, SYN-ACK dropped by OUTPUT policy
    out = port_verdict(_guide_case_2(), ("outbound", "ipv4", 587), Endpoints(HOST, "192.0.2.25", "eth0", frozenset({HOST})))
    assert out.verdict == "block" and "policy DROP of chain OUTPUT" in out.blocked_by


def test_fail2ban_ban_on_the_prober_is_named_as_such():
    f2b = Chain("f2b-exim", [rule(Addr("saddr", (f"{PROBER}/32",)), verdict="reject",
                                  text=f"-A f2b-exim -s {PROBER}/32 -j REJECT"), rule(verdict="return", pos=2)])
    inp = Chain("INPUT", [rule(TCP, dport(25, 465, 587), verdict="jump", chain="f2b-exim")], "input", 0, "accept")
    rs = Ruleset([table([inp, f2b])])
    ends = Endpoints(HOST, PROBER, "eth0", frozenset({HOST}))
    vs = [port_verdict(rs, ("inbound", "ipv4", p), ends) for p in (25, 465, 587, 143, 993)]
    found = findings_for(vs, {"ipv4": PROBER})
    codes = [f.code for f in found]
    assert codes.count("firewall.prober_banned") == 1
    assert codes.count("firewall.source_specific") == 3
    assert "f2b-exim" in found[0].evidence and vs[0].reject
