"""The lab hosts' own DNS responder (tests/labdns.py), on loopback: no root needed."""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.reversename
import pytest

from tests.labdns import LabResolver, is_lab_address


@pytest.fixture
def resolver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = LabResolver("127.0.0.1", {"mx7.lab.test": ["198.18.7.2", "2001:2:0:7::2"]}, port=port).start()
    yield r
    r.close()


def ask(r: LabResolver, name: str, rdtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), r.address, port=r.port, timeout=2)


def test_answers_lab_names_forward_and_reverse(resolver):
    a = ask(resolver, "mx7.lab.test", "A")
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert [rr.to_text() for rr in a.answer[0]] == ["198.18.7.2"]
    assert [rr.to_text() for rr in ask(resolver, "mx7.lab.test", "AAAA").answer[0]] == ["2001:2:0:7::2"]
    ptr = ask(resolver, dns.reversename.from_address("198.18.7.2").to_text(), "PTR")
    assert [rr.to_text() for rr in ptr.answer[0]] == ["mx7.lab.test."]
    empty = ask(resolver, "mx7.lab.test", "MX")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer


def test_other_lab_names_do_not_exist_and_the_world_is_refused(resolver):
    assert ask(resolver, "mx8.lab.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(resolver, "9.9.18.198.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN
    assert ask(resolver, "www.example.com", "A").rcode() == dns.rcode.REFUSED
    assert ask(resolver, "3.2.1.10.in-addr.arpa", "PTR").rcode() == dns.rcode.REFUSED
    assert resolver.queries[-1] == ("3.2.1.10.in-addr.arpa.", "PTR")


def test_garbage_is_ignored_and_close_frees_the_port(resolver):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00garbage", (resolver.address, resolver.port))
    assert ask(resolver, "mx7.lab.test", "A").answer  # still serving
    resolver.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((resolver.address, resolver.port))  # no lingering socket


def test_lab_addresses():
    assert is_lab_address("198.19.255.1") and is_lab_address("2001:2:0:7::2")
    assert not is_lab_address("198.20.0.1") and not is_lab_address("8.8.8.8")
    assert not is_lab_address("not an address")
