"""Fixtures for the lab tests: real hosts in network namespaces.

When the machine cannot run the lab (not root, a package missing) the tests
say so: skipped with the reason, or failed when MAILCHECK_LAB=required (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import dnslab as dnslab_mod
from tests.labhost import LabHost, make_client_key, make_host, missing_prerequisites
from tests.labrouter import RoutedHost, make_routed_host

pytestmark = pytest.mark.lab


def _require_lab(missing: list[str] | None = None) -> None:
    missing = missing_prerequisites() if missing is None else missing
    if missing:
        msg = "lab needs: " + ", ".join(missing) + " (see README: Lab tests)"
        if os.environ.get("MAILCHECK_LAB") == "required":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    _require_lab()
    return make_client_key(tmp_path_factory.mktemp("labkey"))


@pytest.fixture
def lab(client_key):
    """A factory: lab(os_release=..., ipv6=...) -> LabHost; all closed at the end."""
    hosts: list[LabHost] = []

    def factory(**kw) -> LabHost:
        host = make_host(client_key, **kw)
        hosts.append(host)
        return host

    yield factory
    for host in hosts:
        host.close()


@pytest.fixture
def labhost(lab) -> LabHost:
    return lab()


@pytest.fixture
def routed(client_key) -> RoutedHost:
    """A lab host behind a router namespace (tests/labrouter.py); closed at the end."""
    host = make_routed_host(client_key)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def csf_src() -> Path:
    """Real CSF's code: a public snapshot, not a package (tests/csflab.py required_snapshot)."""
    from tests.csflab import required_snapshot

    return required_snapshot()


@pytest.fixture(scope="session")
def dnslab_session():
    """One DNS lab (knot, unbound, rbldnsd, rewriter, HTTPS) for the whole session."""
    _require_lab(dnslab_mod.missing_prerequisites())
    lab = dnslab_mod.DnsLab().start()
    yield lab
    lab.close()


@pytest.fixture
def dnslab(dnslab_session):
    """The session's DNS lab with an empty world; the test loads the world it needs."""
    dnslab_session.load([])
    yield dnslab_session


@pytest.fixture
def dnshost(lab, dnslab):
    """A factory: lab hosts whose resolv.conf names the DNS lab's resolver, linked to it."""
    def factory(**kw) -> LabHost:
        host = lab(resolver=dnslab.resolver, **kw)
        dnslab.attach(host)
        return host
    return factory
