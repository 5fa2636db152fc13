"""A mail host reachable over SSH only through a bastion (issue 10, item 3).

Two lab hosts: the bastion, and the target, joined by a link of their own
(198.18.T.4/30). The lab's firewall (an nft table in the root namespace, removed
at the end) rejects SSH from outside to the target, so only the bastion can
reach it; the mail ports stay reachable from outside, as on a real bastion
setup. The inventory names the bastion as the target's `jump`, and everything
is built by the composition root (bot/wiring.py): the check, the fix (backup,
dead-man guard, its confirming fresh connection, persist), the verification
and the rollback all go through the bastion, whose sshd log counts them.
"""

from __future__ import annotations

import contextlib

import pytest

from bot.errors import UnreachableError
from bot.models import Actor, Command
from bot.transport import SSHTransport
from bot.wiring import Wiring
from config.inventory import Inventory
from config.settings import Settings
from tests.labhost import _run

pytestmark = pytest.mark.lab


@contextlib.contextmanager
def behind(bastion, target):
    """Link the two hosts; SSH to the target from outside is rejected by the lab."""
    n = target.index
    a_end, t_end = f"mcba{n}", f"mcbt{n}"
    table = f"mclab_ssh_{n}"
    try:
        _run("ip", "link", "add", a_end, "netns", bastion.ns, "type", "veth", "peer", "name", t_end,
             "netns", target.ns)
        target.sh("ip", "addr", "add", f"198.18.{n}.5/30", "dev", t_end)
        bastion.sh("ip", "addr", "add", f"198.18.{n}.6/30", "dev", a_end)
        target.sh("ip", "link", "set", t_end, "up")
        bastion.sh("ip", "link", "set", a_end, "up")
        bastion.sh("ip", "route", "add", f"{target.ip}/32", "via", f"198.18.{n}.5")
        _run("nft", f"add table inet {table}")
        _run("nft", f"add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}")
        _run("nft", f"add rule inet {table} out ip daddr {target.ip} tcp dport 22 reject with tcp reset")
        yield
    finally:
        _run("nft", f"delete table inet {table}", check=False)
        bastion.sh("ip", "link", "del", a_end, check=False)


def logins(lh) -> int:
    """Connections the host's sshd accepted (its log: -e, LogLevel INFO)."""
    return (lh.workdir / "sshd.log").read_text().count("Accepted publickey")


async def test_check_fix_guard_and_rollback_all_go_through_the_bastion(lab, tmp_path, client_key):
    bastion, target = lab(), lab()
    target.start_exim("public")
    target.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    rules_before = target.rules()
    inventory = Inventory.model_validate({"hosts": {
        "bastion": {"address": bastion.ip, "identity_file": str(client_key),
                    "known_hosts": str(bastion.known_hosts)},
        "mx": {"address": target.ip, "identity_file": str(client_key),
               "known_hosts": str(target.known_hosts), "jump": "bastion", "approvers": ["UOPS"]}}})
    settings = Settings(_env_file=None, db_path=tmp_path / "mc.db", backup_dir=target.workdir / "bk",
                        connect_timeout=3.0, command_timeout=8.0, probe_timeout=1.5,
                        lockout_deadline=20)
    with behind(bastion, target):
        direct = SSHTransport(inventory.hosts["mx"].model_copy(update={"jump": None}), settings)
        with pytest.raises(UnreachableError, match="Connection refused|refused"):
            await direct.run([Command(("true",))])  # the lab refuses SSH from outside
        await direct.close()
        assert target.probe(25) == "filtered" and target.probe(22, timeout=1) == "refused"

        wiring = Wiring(settings, inventory)
        host = inventory.hosts["mx"]
        seen = logins(bastion)
        report = await wiring.engine().check(host)
        assert logins(bastion) > seen, "the check did not go through the bastion"
        [fix] = [f for f in report.fixes if f.backend == "iptables"]
        svc = wiring.fix_service()
        plan_id = (await svc.register(report, Actor("slack", "UREQ"), "C0MAIL"))[fix.id]
        seen = logins(bastion)
        out = await svc.apply(plan_id, Actor("slack", "UOPS"))
        assert out.status == "applied" and out.verify.achieved, (out.message, out.log)
        assert target.probe(25) == "open"
        # the apply's connection, the guard's fresh confirming one, persist, and the verifying check
        assert logins(bastion) - seen >= 4, logins(bastion) - seen
        [bdir] = [d for d in (target.workdir / "bk").iterdir() if d.name != ".lock"]
        assert (bdir / "deadman.armed.cancelled").exists()  # disarmed over the fresh connection

        seen = logins(bastion)
        rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
        assert rb.status == "rolled_back" and rb.exact, rb.message
        assert logins(bastion) > seen
        assert target.rules() == rules_before and target.probe(25) == "filtered"
