"""Backup plans (pure) and the dead-man job's mechanics, run for real with LocalTransport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.firewall.plan.iptables import IptablesPlanner
from bot.fixes.backup import backup_for, line_from_dict, line_to_dict, normalize_ruleset
from bot.models import BackupSpec, Command, Fix
from bot.transport import LocalTransport, ScriptLine, detached_command, script_command


def fw(spec: BackupSpec | None, *commands: list[str], rollback=()) -> Fix:
    return Fix(id="f", kind="firewall", backend="x", summary="s", commands=list(commands),
               rollback=list(rollback), backup=spec)


def test_rulesets_are_saved_tested_and_restored_as_declared():
    spec = BackupSpec(rulesets=["iptables-legacy", "iptables"], guard=True)
    bp = backup_for(fw(spec, ["iptables-legacy", "-D", "INPUT", "1"]), "/var/backups/mailcheck",
                    "mx1", "c_1", now=0)
    d = "/var/backups/mailcheck/19700101T000000Z-mx1-c_1"
    assert bp.directory == d and bp.guard
    assert [(s.argv, s.stdin) for s in bp.restore] == [
        (("iptables-legacy-restore",), f"{d}/rules.iptables-legacy"),
        (("iptables-restore",), f"{d}/rules.iptables")]
    assert [(s.argv, s.stdin) for s in bp.test] == [
        (("iptables-legacy-restore", "--test"), f"{d}/rules.iptables-legacy"),
        (("iptables-restore", "--test"), f"{d}/rules.iptables")]
    assert [c.argv for c in bp.dump] == [("iptables-legacy-save",), ("iptables-save",)]


def test_nft_is_restored_atomically_and_test_loaded_with_nft_c():
    spec = BackupSpec(rulesets=["nft"], undo=[["nft", "delete", "rule", "inet", "f", "input",
                                               "handle", "9"]], guard=True)
    bp = backup_for(fw(spec, ["nft", "add", "rule", "inet", "f", "input", "accept"]), "/b", "h", "c")
    assert [s.argv for s in bp.restore] == [("nft", "-f", f"{bp.directory}/ruleset.nft")]
    assert [s.argv for s in bp.test] == [("nft", "-c", "-f", f"{bp.directory}/ruleset.nft")]
    instead = bp.undo_instead()
    assert [s.argv for s in instead.restore] == [tuple(spec.undo[0])] and not instead.test


def test_an_nft_table_is_saved_and_restored_on_its_own():
    spec = BackupSpec(nft_tables=["inet mailfw"], guard=True)
    bp = backup_for(fw(spec, ["nft", "insert", "rule", "inet", "mailfw", "input", "accept"]), "/b", "h", "c")
    path = f"{bp.directory}/table.inet.mailfw.nft"
    assert bp.take[1].argv[-3:] == ("inet", "mailfw", path)
    assert [s.argv for s in bp.test] == [("nft", "-c", "-f", path)]
    assert [s.argv for s in bp.restore] == [("nft", "-f", path)]
    assert [c.argv for c in bp.dump] == [("nft", "list", "table", "inet", "mailfw")]
    with pytest.raises(ValidationError):
        BackupSpec(nft_tables=["inet mail fw; flush ruleset"])


def test_paths_come_back_first_and_reload_runs_last():
    spec = BackupSpec(compare=["nft"], paths=["/etc/firewalld"],
                      reload=[["firewall-cmd", "--reload"]], guard=True)
    bp = backup_for(fw(spec, ["firewall-cmd", "--add-service", "smtp"]), "/b", "h", "c")
    assert [s.argv[-2:] for s in bp.restore[:1]] == [("/etc/firewalld", f"{bp.directory}/files/etc/firewalld")]
    assert bp.restore[-1].argv == ("firewall-cmd", "--reload")
    assert [c.argv for c in bp.dump] == [("nft", "list", "ruleset")] and not bp.test  # compared only


def test_nothing_saved_means_the_fix_rollback_restores():
    svc = Fix(id="s", kind="service", summary="s", commands=[["systemctl", "start", "exim4"]],
              rollback=[["systemctl", "stop", "exim4"]])
    bp = backup_for(svc, "/b", "h", "c")
    assert [s.argv for s in bp.restore] == [("systemctl", "stop", "exim4")] and not bp.guard


def test_a_spec_refuses_bad_paths_and_a_guard_with_nothing_to_restore():
    for bad in ("etc/ufw", "/etc", "/etc/../root", "/etc//ufw", "/etc/ufw\n"):
        with pytest.raises(ValidationError):
            BackupSpec(paths=[bad])
    with pytest.raises(ValidationError):
        BackupSpec(guard=True)


def test_the_iptables_planner_declares_the_variants_its_commands_use():
    from bot.firewall.plan.iptables import IptablesChange
    changes = [IptablesChange("ip", "filter", "iptables-legacy", "INPUT", "delete", 1, ["-j", "DROP"], "r"),
               IptablesChange("ip", "filter", "iptables-nft", "INPUT", "insert", 1, ["-j", "ACCEPT"], "r")]
    spec = IptablesPlanner(default_source="iptables-nft").backup(changes)
    assert spec.rulesets == ["iptables-legacy", "iptables"] and spec.guard


async def test_a_declared_path_comes_back_exactly_and_an_absent_one_is_removed(tmp_path):
    conf, new = tmp_path / "etc" / "app", tmp_path / "etc" / "created.conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "a.conf").write_text("a=1\n")
    (conf / "sub" / "b").write_text("b\n")
    fix = fw(BackupSpec(paths=[str(conf), str(new)]), ["true"])
    bp = backup_for(fix, str(tmp_path / "bk"), "h", "c")
    t = LocalTransport()
    assert (await t.run([script_command(bp.take)]))[0].ok
    (conf / "a.conf").write_text("a=2\n")
    (conf / "added").write_text("x")
    (conf / "sub" / "b").unlink()
    new.write_text("made by the fix")
    [r] = await t.run([script_command(bp.restore)])
    assert r.ok, r.stderr
    assert sorted(str(p.relative_to(conf)) for p in conf.rglob("*")) == ["a.conf", "sub", "sub/b"]
    assert (conf / "a.conf").read_text() == "a=1\n" and not new.exists()


def test_normalize_ignores_counters_comments_and_an_empty_filter_table():
    a = "# Generated by x on Thu\n*filter\n:INPUT ACCEPT [12:345]\n-A INPUT -j DROP\nCOMMIT\n"
    b = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n# Completed\n"
    assert normalize_ruleset(a) == normalize_ruleset(b)
    empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    assert normalize_ruleset(empty) == normalize_ruleset("")


def test_steps_round_trip_through_the_store():
    s = ScriptLine(("iptables-restore",), stdin="/b/rules; rm -rf /")
    assert line_from_dict(line_to_dict(s)) == s


async def test_script_quotes_paths_and_stops_at_the_first_failure(tmp_path):
    weird = str(tmp_path / "a b;$(touch pwned)")
    cmd = script_command([ScriptLine(("printf", "x"), stdout=weird), ScriptLine(("false",)),
                          ScriptLine(("printf", "y"), stdout=weird, append=True)])
    [r] = await LocalTransport().run([cmd])
    assert r.exit_status == 1
    assert Path(weird).read_text() == "x"
    assert not (tmp_path / "pwned").exists()


async def test_dead_man_job_fires_after_the_delay_unless_disarmed(tmp_path):
    t = LocalTransport()
    fired, spared = tmp_path / "fired", tmp_path / "spared"
    for name, out in (("a", fired), ("b", spared)):
        (tmp_path / f"{name}.armed").touch()
        job = detached_command([ScriptLine(("printf", "restored"), stdout=str(out))], delay=1,
                               armed=str(tmp_path / f"{name}.armed"), log=str(tmp_path / f"{name}.log"))
        t0 = time.monotonic()
        [r] = await t.run([job])
        assert r.ok and time.monotonic() - t0 < 1  # detached: returns at once
    disarm = Command(("mv", str(tmp_path / "b.armed"), str(tmp_path / "b.armed.cancelled")))
    assert (await t.run([disarm]))[0].ok
    await asyncio.sleep(1.8)
    assert fired.read_text() == "restored" and (tmp_path / "a.armed.fired").exists()
    assert not spared.exists() and not (tmp_path / "b.armed.fired").exists()
    # too late: the job already renamed the arming file, so disarming fails (and says so)
    late = Command(("mv", str(tmp_path / "a.armed"), str(tmp_path / "a.armed.cancelled")))
    assert not (await t.run([late]))[0].ok


def test_nft_counters_and_expiry_are_not_drift():
    """Docker's nftables backend counts every packet of a published port: not a rule change."""
    a = "table ip docker-bridges {\n\tchain c {\n\t\ttcp dport 25 counter packets 0 bytes 0 dnat to 198.19.1.2:25\n"
    b = a.replace("packets 0 bytes 0", "packets 12 bytes 720")
    assert normalize_ruleset(a) == normalize_ruleset(b)
    s1 = "\t\telements = { 198.18.1.1 expires 59m58s }\n"
    assert normalize_ruleset(s1) == normalize_ruleset(s1.replace("59m58s", "12m1s"))
    assert normalize_ruleset(a) != normalize_ruleset(a.replace("dport 25", "dport 26"))
