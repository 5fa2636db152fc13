"""The guard that keeps every test off the internet (tests/guard.py) does its job.

Each test here provokes the guard on purpose, checks it fired, and clears what it
recorded (otherwise the guard would fail the test at teardown, as it does for any
other test that tries).
"""

from __future__ import annotations

import os
import socket

import pytest

from bot.engine import Engine
from bot.outbound import DEFAULT_TARGETS
from config.inventory import Inventory
from config.settings import Settings
from tests.guard import InternetForbidden


def test_every_test_runs_with_the_outbound_test_and_owner_lookups_off():
    s = Settings(_env_file=None)
    assert (s.outbound_targets, s.rdap_url, s.whois_server) == ("off", "off", "off")
    assert os.environ["MAILCHECK_OUTBOUND_TARGETS"] == "off"


def test_an_engine_that_keeps_the_defaults_fails_the_test(no_internet):
    for field, value in (("outbound_targets", DEFAULT_TARGETS), ("rdap_url", "https://rdap.org/"),
                         ("whois_server", "whois.iana.org")):
        with pytest.raises(InternetForbidden, match="default"):
            Engine(Settings(**{field: value}, _env_file=None), Inventory())
    assert len(no_internet.violations) == 3
    no_internet.violations.clear()
    Engine(Settings(outbound_targets="198.18.0.1:25", _env_file=None), Inventory())  # lab targets: fine


async def test_resolving_a_default_target_or_connecting_outside_the_lab_fails_the_test(no_internet):
    import asyncio

    with pytest.raises(InternetForbidden, match="gmail-smtp-in.l.google.com"):
        socket.getaddrinfo("gmail-smtp-in.l.google.com", 25)
    with pytest.raises(InternetForbidden, match="smtp.gmail.com"):  # asyncio's resolver too
        await asyncio.get_running_loop().getaddrinfo("smtp.gmail.com", 465)
    with socket.socket() as s, pytest.raises(InternetForbidden, match="192.0.2.1"):
        s.connect(("192.0.2.1", 25))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(InternetForbidden):
        s.sendto(b"x", ("8.8.8.8", 53))
    assert len(no_internet.violations) == 4
    no_internet.violations.clear()


def test_swallowed_attempts_still_fail_the_test(no_internet):
    try:
        socket.getaddrinfo("whois.iana.org", 43)
    except Exception:  # noqa: BLE001 - as code under test might
        pass
    assert no_internet.violations == ["resolving the name 'whois.iana.org'"]  # teardown would fail on it
    no_internet.violations.clear()


def test_loopback_and_lab_addresses_are_allowed(no_internet):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", 9))
    no_internet.check_address(("198.18.0.1", 9))  # judged, not sent: no lab host owns it here
    no_internet.check_address(("2001:2:0:1::1", 25, 0, 0))
    socket.getaddrinfo("localhost", 25)
    socket.getaddrinfo("198.18.0.1", 25)
    assert no_internet.violations == []
