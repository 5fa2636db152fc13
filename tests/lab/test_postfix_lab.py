"""The Postfix lab host is a real Postfix server, seen by mailcheck over SSH."""

from __future__ import annotations

import pytest

from tests.lab.test_container_lab import ssh
from tests.postfixlab import PostfixHost

pytestmark = pytest.mark.lab


def test_postfix_host_is_real_over_ssh(labhost):
    PostfixHost(labhost).start(submission=True)
    assert labhost.probe(25) == "open" and labhost.probe(587) == "open"
    assert labhost.probe(465) == "refused" and labhost.probe(993) == "open"
    r = ssh(labhost, "cat /etc/os-release; ss -Hltnp 'sport = :25'; postconf -h inet_interfaces; "
                     "postfix check && echo CHECK-OK; postconf -M submission/inet; ps -e -o comm")
    assert r.returncode == 0, r.stderr
    assert 'VERSION_CODENAME=bookworm' in r.stdout
    assert '"master"' in r.stdout and "CHECK-OK" in r.stdout
    assert "submission inet  n       -       y       -       -       smtpd" in r.stdout
    procs = r.stdout.split()
    assert "master" in procs and "qmgr" in procs and "dovecot" in procs
    assert "exim4" not in procs and "python3" not in procs  # only the Postfix host's processes
    log = ssh(labhost, "cat /var/log/mail.log").stdout
    assert "postfix/master" in log and "daemon started" in log


def test_postscreen_banner_is_delayed(labhost):
    pf = PostfixHost(labhost).start(postscreen=True, main={"postscreen_greet_wait": "3s"})
    lines = pf.banner(25, wait=10)
    assert lines[0][1].startswith("220-mx.lab.test") and lines[0][0] < 1
    assert lines[-1][1].startswith("220 mx.lab.test") and lines[-1][0] >= 2.5
    assert "postscreen" in pf.inside("ps", "-e", "-o", "comm").stdout.split()


def test_loopback_only_is_refused_outside_and_fixed_by_config_then_rolled_back(labhost):
    pf = PostfixHost(labhost).start(inet_interfaces="loopback-only")
    before = pf.inside("cat", "/etc/postfix/main.cf").stdout
    assert labhost.probe(25) == "refused"
    ss = labhost.sh("ss", "-Hltn", "sport = :25").stdout
    assert "127.0.0.1:25" in ss and "0.0.0.0:25" not in ss
    pf.inside("cp", "-p", "/etc/postfix/main.cf", "/etc/postfix/main.cf.mailcheck-backup")
    pf.inside("postconf", "-e", "inet_interfaces=all")
    pf.inside("postfix", "check")
    pf.inside("postfix", "stop")
    pf.inside("postfix", "start")
    labhost.wait_listening({25})
    assert labhost.probe(25) == "open"
    pf.inside("cp", "-p", "/etc/postfix/main.cf.mailcheck-backup", "/etc/postfix/main.cf")
    pf.inside("postfix", "stop")
    pf.inside("postfix", "start")
    assert pf.inside("cat", "/etc/postfix/main.cf").stdout == before
    assert labhost.probe(25) == "refused"


def test_submission_and_smtps_follow_master_cf(labhost):
    pf = PostfixHost(labhost).start(submission=False)
    assert labhost.probe(587) == "refused"
    pf.configure(submission=True, smtps=True, postscreen=False, inet_interfaces="all", main={})
    labhost.wait_listening({587, 465})
    assert labhost.probe(587) == "open" and labhost.probe(465) == "open"
