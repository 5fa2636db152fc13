"""The recorded outputs of the real Postfix, CSF and fail2ban labs are complete and consistent.

They are test vectors for the services, firewall-manager and MTA-configuration
checks (issue 11); this only checks that each recording says what its name says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data"
POSTFIX = sorted(p for p in (DATA / "postfix").iterdir() if p.is_dir())
CSF = sorted(p for p in (DATA / "csf").iterdir() if p.is_dir())


def _outside(rec: Path) -> dict[str, str]:
    return json.loads((rec / "outside.json").read_text())["outcomes"]


@pytest.mark.parametrize("rec", POSTFIX, ids=[p.name for p in POSTFIX])
def test_postfix_recording_matches_its_outside_probes(rec):
    ss = (rec / "ss_-Hltnp.txt").read_text()
    master_cf = (rec / "cat_etc_postfix_master.cf.txt").read_text()
    outside = _outside(rec)
    interfaces = (rec / "postconf_-h_inet_interfaces_inet_protocols.txt").read_text().split()[0]
    assert '"master"' in ss
    if interfaces == "loopback-only":
        assert "127.0.0.1:25 " in ss and outside["25"] == "refused"
    else:
        assert "0.0.0.0:25 " in ss and outside["25"] == "open"
    submission = any(line.startswith("submission inet") for line in master_cf.splitlines())
    assert (outside["587"] == "open") == (submission and interfaces != "loopback-only")
    postscreen = any(line.split()[:2] == ["smtp", "inet"] and line.split()[-1] == "postscreen"
                     for line in master_cf.splitlines() if line.strip())
    banners = json.loads((rec / "outside.json").read_text())["banners"]
    if postscreen:
        assert banners["25"][0][1].startswith("220-") and banners["25"][-1][0] >= 5
    elif "25" in banners:
        assert banners["25"] == [[banners["25"][0][0], "220 mx.lab.test ESMTP Postfix (Debian/GNU)"]]


def test_postfix_recordings_cover_the_guide_steps():
    assert {p.name for p in POSTFIX} >= {"default_submission", "no_submission", "postscreen",
                                          "loopback_only", "smtps_and_submission"}


@pytest.mark.parametrize("rec", CSF, ids=[p.name for p in CSF])
def test_csf_recording_is_csf(rec):
    assert (rec / "csf_-v.txt").read_text().startswith("csf: v15.03 (generic)")
    rules = (rec / "rules.v4").read_text()
    assert ":LOCALINPUT - " in rules and ":INPUT DROP " in rules
    options = (rec / "csf.conf.options").read_text()
    testing = 'TESTING = "0"' not in options
    assert ("csf -f" in (rec / "crontab.txt").read_text()) == testing
    ipv6 = 'IPV6 = "1"' in options
    assert (":INPUT DROP " in (rec / "rules.v6").read_text()) == ipv6  # IPV6="0": IPv6 unfiltered


def test_the_real_csf_conf_is_kept_for_config_fixes():
    conf = (DATA / "csf" / "csf.conf").read_text()
    for key in ("TESTING", "TCP_IN", "TCP_OUT", "IPV6", "TCP6_IN", "TCP6_OUT"):
        assert f"\n{key} = " in conf
