"""Causes and symptoms (bot/diagnosis.py): the guide's first case through the real engine, and
findings of steps the correlation has never heard of."""

from __future__ import annotations

import json

from bot import diagnosis
from bot.firewall.plan.base import button_label
from bot.models import Finding, Fix, PortKey, Report
from tests import guide_case


def k(direction: str, family: str, port: int) -> PortKey:
    return PortKey(direction, family, port)


async def test_guide_case_five_symptoms_point_at_the_input_rule_and_the_verdict_lists_two_causes():
    report = await guide_case.report()
    by_code: dict[str, list[Finding]] = {}
    for f in report.findings:
        by_code.setdefault(f.code, []).append(f)
    (inbound,), (outbound,) = by_code["firewall.inbound_blocked"], by_code["firewall.outbound_blocked"]
    assert inbound.summary == "iptables INPUT rule 2 drops inbound 25,143,465,587,993 (IPv4)"
    assert outbound.summary == "iptables OUTPUT rule 1 drops outbound 25,465,587 (IPv4)"
    assert set(inbound.ports) == {k("inbound", "ipv4", p) for p in (25, 143, 465, 587, 993)}
    filtered = by_code["port.filtered"]
    (provider,) = by_code["provider.unknown"]  # a note: no metadata in the recording, no holder asked
    assert provider.role == "note" and len(filtered) == 5 and len(report.findings) == 8
    assert all(f.role == "symptom" and f.caused_by == [inbound.id] for f in filtered)
    assert report.causes == [inbound.id, outbound.id]
    assert len({f.id for f in report.findings}) == 8  # unique ids
    data = json.loads(json.dumps(report.to_json_dict()))
    assert data["causes"] == [inbound.id, outbound.id]
    row = next(f for f in data["findings"] if f["code"] == "port.filtered")
    assert row["role"] == "symptom" and row["caused_by"] == [inbound.id]
    assert row["ports"] == [["inbound", "ipv4", row["ports"][0][2]]]


async def test_one_fix_for_both_rules_is_one_item_labelled_by_what_it_does():
    report = await guide_case.report()
    answer = diagnosis.answer(report)
    (item,) = answer.items
    assert [c.code for c in item.causes] == ["firewall.inbound_blocked", "firewall.outbound_blocked"]
    assert item.fix is not None and item.fix.label == "Delete INPUT rule 2 + OUTPUT rule 1"
    assert len(answer.symptoms) == 5 and answer.other_fixes == ()


def test_a_symptom_nothing_explains_stands_for_its_unknown_cause():
    seen = Finding(code="port.filtered", severity="error", summary="25 filtered", step="ports",
                   ports=[k("inbound", "ipv4", 25)])
    unrelated = Finding(code="service.loopback_only", severity="warning", summary="587 loopback",
                        step="services", ports=[k("inbound", "ipv4", 587)])
    report = diagnosis.diagnose(Report(host="h", address="a", findings=[unrelated, seen]))
    code = {f.id: f.code for f in report.findings}
    assert [code[i] for i in report.causes] == ["port.filtered", "service.loopback_only"]
    assert report.findings[1].caused_by == []  # worst first: the unexplained error leads


def test_codes_it_never_heard_of_fit_by_their_ports_and_role():
    # a container step's cause, a DNS cause without ports, a provider's new symptom
    findings = [
        Finding(code="container.not_published", severity="error", step="containers",
                summary="postfix container does not publish 587", ports=[k("inbound", "ipv6", 587)]),
        Finding(code="dns.no_ptr", severity="warning", step="dns", summary="no PTR for the address"),
        Finding(code="probe.rejected", role="symptom", severity="warning", step="ports",
                summary="587/IPv6 rejected (ICMP)", ports=[k("inbound", "ipv6", 587)]),
        Finding(code="dns.note", role="note", severity="warning", step="dns", summary="a note"),
        Finding(code="tls.self_signed", severity="info", step="ports", summary="self-signed"),
    ]
    report = diagnosis.diagnose(Report(host="h", address="a", findings=findings))
    ids = {f.code: f.id for f in report.findings}
    assert ids["container.not_published"] == "containers#1" and ids["dns.no_ptr"] == "dns#1"
    symptom = next(f for f in report.findings if f.code == "probe.rejected")
    assert symptom.caused_by == [ids["container.not_published"]]
    assert report.causes == [ids["container.not_published"], ids["dns.no_ptr"]]
    roles = {f.code: f.role for f in report.findings}
    assert roles["tls.self_signed"] == "note"  # from the catalogue
    assert diagnosis.diagnose(report) == report  # idempotent


def test_causes_sharing_a_fix_are_grouped_and_other_fixes_are_kept():
    fix = Fix(id="fw", kind="firewall", summary="s", label="Delete INPUT rule 2", commands=[["true"]])
    other = Fix(id="tools-install", kind="tools", summary="Install dig", commands=[["true"]])
    findings = [
        Finding(code="a", severity="error", summary="a", step="x", fixes=["fw"]),
        Finding(code="b", severity="error", summary="b", step="x"),
        Finding(code="c", severity="warning", summary="c", step="x", fixes=["fw"]),
    ]
    answer = diagnosis.answer(Report(host="h", address="a", findings=findings, fixes=[fix, other]))
    assert [([c.code for c in i.causes], i.fix.id if i.fix else None) for i in answer.items] == [
        (["a", "c"], "fw"), (["b"], None)]
    assert [f.id for f in answer.other_fixes] == ["tools-install"]


def test_effect_in_words():
    keys = [k("inbound", "ipv4", p) for p in (993, 25, 143)] + [k("inbound", "ipv6", 25)] + \
        [k("outbound", f, 587) for f in ("ipv4", "ipv6")]
    assert diagnosis.effect(keys) == "in 25 (IPv4, IPv6) · in 143,993 (IPv4) · out 587 (IPv4, IPv6)"
    assert diagnosis.effect([]) == ""


def test_button_label_from_the_changes_or_the_ports_it_opens():
    class Delete:
        def __init__(self, label):
            self.label = label

    assert button_label([Delete("Delete INPUT rule 2"), Delete("Delete OUTPUT rule 1")], []) == \
        "Delete INPUT rule 2 + OUTPUT rule 1"
    opened = [k("outbound", "ipv4", p) for p in (587, 25, 465)]
    assert button_label([Delete(None)], opened) == "Open 25,465,587 out (IPv4)"
    both = opened + [k("inbound", "ipv6", 25)]
    assert button_label([object()], both) == "Open 25 in + 25,465,587 out (IPv4, IPv6)"
