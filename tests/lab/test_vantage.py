"""A second vantage point behind a path drop (issue 15, item 7), on real kernels.

    root (mailcheck) ── router mcR ──┬── mail host mcH (sshd, exim on 25/465/587)
                                     └── vantage point mcV (sshd, `vantage: true`)

The router drops TCP to the mail host's port 25 from mailcheck's address only (an nft
forward rule in the router's namespace, the router's own table). mailcheck's probe gets
no answer; the vantage point's probe, run over SSH with its fixed script, connects: the
report shows both views and the disagreement. Without the drop both agree, and no
disagreement is reported.
"""

from __future__ import annotations

import shutil

import pytest

from bot.engine import Engine
from bot.models import Report
from config.inventory import Inventory
from config.settings import Settings
from tests.labrouter import make_routed_host

pytestmark = pytest.mark.lab
PROBE_TIMEOUT = 1.5


@pytest.fixture
def vantage(routed, client_key):
    """A second host on the mail host's router, routed to it (and back)."""
    host = make_routed_host(client_key, router=routed.router)
    try:
        routed.route_to(host)
        yield host
    finally:
        host.close()


def inventory(mail, vantage) -> Inventory:
    def entry(lab, **kw) -> dict:
        return {"address": lab.ip, "identity_file": str(lab.client_key),
                "known_hosts": str(lab.known_hosts), **kw}
    return Inventory.model_validate({"hosts": {"mx": entry(mail), "outpost": entry(vantage, vantage=True)}})


async def check(mail, vantage) -> Report:
    s = Settings(probe_timeout=PROBE_TIMEOUT, connect_timeout=5, outbound_targets="off", _env_file=None)
    inv = inventory(mail, vantage)
    return await Engine(s, inv).check(inv.get("mx"), steps=["services", "ports", "firewall", "vantage"])


def inbound(report: Report, number: int, family: str = "ipv4"):
    return next(p for p in report.ports if p.direction == "inbound" and p.family == family and p.port == number)


def drop_from_mailcheck(router, mail, port_: int) -> None:
    """On the router, drop what mailcheck (the root namespace's end of the router's link) sends
    to the mail host's port; what the vantage point sends passes."""
    rules = [f"ip saddr {router.outside_ip} ip daddr {mail.ip} tcp dport {port_} drop",
             f"ip6 saddr {router.outside_ip6} ip6 daddr {mail.ip6} tcp dport {port_} drop"]
    router.sh("nft", "add table inet pathdrop")
    router.sh("nft", "add chain inet pathdrop forward_drop { type filter hook forward priority 0; policy accept; }")
    for rule in rules:
        router.sh("nft", f"add rule inet pathdrop forward_drop {rule}")


async def test_a_path_drop_seen_from_one_side_only(routed, vantage):
    routed.start_exim("public")
    drop_from_mailcheck(routed.router, routed, 25)
    report = await check(routed, vantage)

    step = next(s for s in report.steps if s.name == "vantage")
    assert step.status == "warn", step
    for family, src, vsrc in (("ipv4", routed.router.outside_ip, vantage.ip),
                              ("ipv6", routed.router.outside_ip6, vantage.ip6)):
        p = inbound(report, 25, family)
        assert p.outside == "filtered" and p.firewall == "allow" and p.listening == "public"
        assert [(v.vantage, v.outside, v.source) for v in p.vantage] == [("outpost", "open", vsrc)]
        for number, state in ((465, "open"), (587, "open"), (143, "refused"), (993, "refused")):
            q = inbound(report, number, family)  # the other ports: both views agree
            assert q.outside == state and [v.outside for v in q.vantage] == [state], (number, q)
        label = "25/IPv4" if family == "ipv4" else "25/IPv6"
        mine = [f for f in report.findings if f.code == "vantage.disagrees" and label in f.summary]
        assert len(mine) == 1, report.findings
        assert f"filtered from mailcheck ({src})" in mine[0].summary
        assert f"open from vantage point outpost ({vsrc})" in mine[0].summary
        assert "one path" in mine[0].summary
    assert len([f for f in report.findings if f.code == "vantage.disagrees"]) == 2


async def test_agreeing_views_raise_no_disagreement(routed, vantage):
    routed.start_exim("public")
    report = await check(routed, vantage)
    assert not [f for f in report.findings if f.code in ("vantage.disagrees", "vantage.failed")]
    for family in ("ipv4", "ipv6"):
        for number, state in ((25, "open"), (465, "open"), (587, "open"), (143, "refused")):
            p = inbound(report, number, family)
            assert p.outside == state and [(v.vantage, v.outside) for v in p.vantage] == [("outpost", state)]
    assert next(s for s in report.steps if s.name == "vantage").status == "ok"


async def test_a_vantage_point_without_python3_says_what_bash_cannot_tell(routed, vantage, tmp_path):
    """The vantage point's SSH sessions find no python3 (a PATH without it): the bash probe
    runs instead. It tells open and filtered apart, so the path drop is still seen; a refused
    port is `unknown` from there (a TCP RST and an ICMP port-unreachable look alike to bash),
    and unknown is no disagreement."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("sh", "bash", "timeout", "tr", "mktemp", "rm", "cat"):
        (bin_dir / prog).symlink_to(shutil.which(prog))
    vantage.set_ssh_env(PATH=str(bin_dir), HOME=str(tmp_path))  # no ~/.bashrc to set PATH again
    routed.start_exim("public")
    drop_from_mailcheck(routed.router, routed, 25)
    report = await check(routed, vantage)
    p25, p143 = inbound(report, 25), inbound(report, 143)
    assert p25.outside == "filtered" and [v.outside for v in p25.vantage] == ["open"]
    assert p143.outside == "refused" and [v.outside for v in p143.vantage] == ["unknown"]
    assert "cannot tell" in p143.vantage[0].detail and "Connection refused" in p143.vantage[0].detail
    codes = sorted(f.summary.split(":")[0] for f in report.findings if f.code == "vantage.disagrees")
    assert codes == ["Port 25/IPv4", "Port 25/IPv6"], report.findings
