"""Shared builders for the fix unit tests."""

from __future__ import annotations

from bot.fixes.apply import fingerprint
from bot.models import BackupSpec, Fix, PortStatus, Precondition, Report
from config.inventory import Inventory
from config.settings import Settings

IPTABLES_GUARDED = BackupSpec(rulesets=["iptables"], guard=True)
RULES = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m multiport --dports 25 -j DROP\nCOMMIT\n"


def inventory() -> Inventory:
    return Inventory.model_validate({
        "hosts": {
            "mx1": {"address": "198.18.0.2", "tags": ["prod"], "approvers": ["UHOST"],
                    "approver_groups": ["SHOSTGRP"]},
            "mx2": {"address": "198.18.0.6", "tags": ["eu"]},
            "mx3": {"address": "198.18.0.10"},
        },
        "groups": {"mail": ["mx1", "mx2"]},
        "approvals": [
            {"groups": ["mail"], "users": ["UGROUP"]},
            {"tags": ["prod"], "usergroups": ["SPRODOPS"]},
            {"tags": ["eu"], "users": ["UEU"]},
            {"hosts": ["mx3"], "users": ["UMX3"]},
        ],
    })


def settings(tmp_path, **kw) -> Settings:
    base = dict(db_path=tmp_path / "mc.db", backup_dir=tmp_path / "bk", lockout_deadline=10, connect_timeout=1.0,
                lock_wait=30.0, command_timeout=0.5)
    base.update(kw)
    return Settings(_env_file=None, **base)


def fix(marker: str = "a", pre_out: str = RULES) -> Fix:
    return Fix(
        id=f"fw-{marker}", kind="firewall", backend="iptables", summary=f"open 25 ({marker})",
        commands=[["iptables", "-D", "INPUT", "-p", "tcp", "-m", "comment", "--comment", marker,
                   "-j", "DROP"]],
        persist=[["netfilter-persistent", "save"]],
        preconditions=[Precondition(argv=["iptables-save"], description="INPUT rules",
                                    normalize="iptables-save",
                                    expect_sha256=fingerprint(pre_out, "iptables-save"))],
        expected_allow=[("inbound", "ipv4", 25)],
        backup=IPTABLES_GUARDED,
    )


def report(host: str = "mx1", *fixes: Fix) -> Report:
    return Report(host=host, address="198.18.0.2", fixes=list(fixes) or [fix()],
                  ports=[PortStatus(port=25, direction="inbound", outside="filtered")])
