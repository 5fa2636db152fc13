"""No test asks the internet (issue 15): an autouse guard for every test.

1. Every test runs with MAILCHECK_OUTBOUND_TARGETS, MAILCHECK_RDAP_URL and
   MAILCHECK_WHOIS_SERVER set to `off`: a test that wants them sets lab values.
2. An engine built with the defaults anyway (the providers' mail servers, rdap.org,
   whois.iana.org), from settings or arguments, fails the test at once.
3. This process may resolve no name but `localhost`, and connect or send only to
   loopback and the lab's addresses (198.18.0.0/15, 2001:2::/48): anything else fails
   the test, even if the code under test swallowed the error (the attempt is recorded
   and the test fails at teardown).

Programs the lab runs inside a lab host's namespace are not watched here: those
namespaces have no default route (tests/labhost.py), so nothing they send leaves.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from bot import engine as engine_module
from bot.outbound import DEFAULT_TARGETS, is_ip, parse_targets
from config.settings import Settings

ALLOWED = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15",
                                                  "2001:2::/48"))
OFF = {"MAILCHECK_OUTBOUND_TARGETS": "off", "MAILCHECK_RDAP_URL": "off",
       "MAILCHECK_WHOIS_SERVER": "off"}


class InternetForbidden(AssertionError):
    """A test tried to reach something outside this machine's lab."""


class Guard:
    def __init__(self) -> None:
        self.violations: list[str] = []

    def fail(self, what: str) -> None:
        self.violations.append(what)
        raise InternetForbidden(f"tests must not reach the internet: {what}")

    def check_name(self, host) -> None:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        if name in ("", "localhost") or is_ip(name):
            return
        self.fail(f"resolving the name {name!r}")

    def check_address(self, address) -> None:
        if not isinstance(address, tuple) or not address:
            return  # AF_UNIX paths, netlink, ...
        host = str(address[0]).split("%")[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            self.fail(f"connecting to the name {host!r}")
            return
        if not any(ip in net for net in ALLOWED):
            self.fail(f"connecting or sending to {ip} (not loopback, not the lab)")

    def check_engine(self, engine) -> None:
        defaults = Settings.model_fields
        if engine.outbound is not None and engine.outbound == parse_targets(DEFAULT_TARGETS):
            self.fail("an engine with the default outbound targets (set lab targets or `off`)")
        if engine.owners.rdap_url == defaults["rdap_url"].default:
            self.fail("an engine with the default RDAP URL (set a lab server or `off`)")
        if engine.owners.whois_server == defaults["whois_server"].default:
            self.fail("an engine with the default whois server (set a lab server or `off`)")


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """The guard; yields it (a test of the guard clears what it provoked on purpose)."""
    guard = Guard()
    for name, value in OFF.items():
        monkeypatch.setenv(name, value)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        guard.check_name(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def watched(method):
        real = getattr(socket.socket, method)

        def call(self, address, *args):
            guard.check_address(address if method != "sendto" else args[-1])
            return real(self, address, *args)
        return call

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for method in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, method, watched(method))
    real_init = engine_module.Engine.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        guard.check_engine(self)

    monkeypatch.setattr(engine_module.Engine, "__init__", init)
    yield guard
    if guard.violations:
        pytest.fail("this test tried to reach beyond the lab: " + "; ".join(guard.violations),
                    pytrace=False)
