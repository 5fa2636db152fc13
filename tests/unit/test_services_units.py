"""Whether Postfix runs, where systemd runs it: Debian's postfix.service is a oneshot wrapper
that stays "active (exited)" whatever Postfix does; its instance postfix@- runs master
(Debian's README.Debian for postfix: "The primary instance is named '-' ... systemctl status
postfix@-"). The text below is systemctl's status format as the guide's samples have it
(no systemd runs as PID 1 on these machines, so it is not captured here)."""

from __future__ import annotations

from pathlib import Path

from bot.checks import services
from tests.unit.checkdata import facts, make_input, result, results

WRAPPER = """\
● postfix.service - Postfix Mail Transport Agent
     Loaded: loaded (/lib/systemd/system/postfix.service; enabled; preset: enabled)
     Active: active (exited) since Mon 2026-11-30 06:00:01 UTC; 5min ago
"""
INSTANCE = """\
× postfix@-.service - Postfix Mail Transport Agent (instance -)
     Loaded: loaded (/lib/systemd/system/postfix@.service; enabled-runtime; preset: enabled)
     Active: {state} since Mon 2026-11-30 06:00:01 UTC; 5min ago
"""


def _state(text: str, family: str = "debian") -> dict:
    inp = make_input(results(result(services.SYSTEMCTL, text, 3)),
                     host_facts=facts(family=family, systemd=True))
    return services.running(inp, ["postfix"], [], {})


def test_debian_postfix_is_down_when_its_instance_failed_whatever_the_wrapper_says():
    ok, line = _state(WRAPPER + INSTANCE.format(state="failed (Result: exit-code)"))["postfix"]
    assert ok is False and line == "postfix@-.service: Active: failed (Result: exit-code)"
    ok, line = _state(WRAPPER + INSTANCE.format(state="active (running)"))["postfix"]
    assert ok is True and line.startswith("postfix@-.service")


def test_without_an_instance_unit_postfix_service_decides():
    running = WRAPPER.replace("active (exited)", "active (running)")
    assert _state(running, family="rhel")["postfix"][0] is True
    assert _state(WRAPPER, family="rhel")["postfix"][0] is False  # a oneshot alone proves nothing


ROOTLESS = Path(__file__).parents[1] / "data" / "containers" / "rootless"


def test_rootless_network_helpers_hold_the_port_for_a_container():
    """ss as it shows real pasta (passt 2023-03-09, Debian 12: the binary's name passt.avx2) and
    slirp4netns (1.2.0, add_hostfwd) forwarding port 25 into a network namespace."""
    for name, process in (("pasta_ss.txt", "passt.avx2"), ("slirp4netns_ss.txt", "slirp4netns")):
        res = results(result(services.SS, (ROOTLESS / name).read_text()),
                      result(services.INSTALLED, "", 2))
        out = services.Services().evaluate(make_input(res))
        p25 = out.ports[("inbound", "ipv4", 25)]
        assert (p25.listening, p25.process) == ("public", process)
        (c,) = [f for f in out.findings if f.code == "service.container"]
        assert c.summary.startswith("Port(s) 25 (IPv4) are held by ")
        assert "a rootless container's network" in c.summary and "could not name" in c.summary
