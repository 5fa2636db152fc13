"""A lab host's own DNS server: a tiny responder on the outside end of its veth.

Every lab host's /etc/netns/NAME/resolv.conf names a resolver inside the lab, so
that the lookups its daemons make (Exim's reverse lookup of each client, above
all) are answered at once and never leave this machine (../shared/LAB.md, "Keep
every lab packet on this machine"). By default tests/labhost.py starts this
responder on 198.18.N.1:53; `make_host(resolver=...)` names another lab
resolver instead (e.g. the DNS lab's unbound).

It answers, authoritatively, the host's own names: mxN.lab.test (the host,
198.18.N.2 and 2001:2:0:N::2) and outside.mxN.lab.test (the outside end, .1 and
::1), forward and reverse; any other name under lab.test or in the lab's reverse
zones is NXDOMAIN; anything else is REFUSED (it is not a recursive resolver).
Every question it gets is kept in `queries`, so a test can see that a lookup
made inside the host reached the lab.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset

LAB_NETWORKS = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48"))
LAB_ZONES = tuple(dns.name.from_text(z) for z in (
    "lab.test", "18.198.in-addr.arpa", "19.198.in-addr.arpa",
    "2.0.0.0.1.0.0.2.ip6.arpa"))


def is_lab_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in LAB_NETWORKS)


class LabResolver:
    """A UDP DNS responder on (address, 53), run in a thread of this process."""

    def __init__(self, address: str, names: dict[str, list[str]], port: int = 53,
                 zones: tuple[dns.name.Name, ...] = LAB_ZONES) -> None:
        """zones: those it answers for (the rest is REFUSED); () refuses every question."""
        self.address, self.port, self.zones = address, port, zones
        self.queries: list[tuple[str, str]] = []  # (name, type) as asked, in order
        self._forward = {dns.name.from_text(n): addrs for n, addrs in names.items()}
        self._reverse = {dns.reversename.from_address(a): dns.name.from_text(n)
                         for n, addrs in names.items() for a in addrs}
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"labdns-{address}", daemon=True)

    def start(self) -> LabResolver:
        try:
            self._sock.bind((self.address, self.port))
        except OSError:
            self._sock.close()
            raise
        self.port = self._sock.getsockname()[1]  # the one the kernel chose, for port=0
        self._sock.setblocking(False)  # dnspython waits for it with the expiration we give
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, _, peer = dns.query.receive_udp(self._sock, expiration=time.time() + 0.2)
            except dns.exception.Timeout:
                continue
            except (dns.exception.DNSException, ValueError):
                continue  # not a DNS query: ignore it, as a server would
            except OSError:
                return  # socket closed
            dns.query.send_udp(self._sock, self.answer(query), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        self.queries.append((name.to_text(), dns.rdatatype.to_text(rdtype)))
        if not any(name.is_subdomain(zone) for zone in self.zones):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        records = self._records(name, rdtype)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif records:
            response.answer.append(dns.rrset.from_text_list(
                name, 60, "IN", dns.rdatatype.to_text(rdtype), records))
        return response  # an empty answer: the name exists, not with this type

    def _records(self, name: dns.name.Name, rdtype: int) -> list[str] | None:
        if name in self._reverse:
            return [self._reverse[name].to_text()] if rdtype == dns.rdatatype.PTR else []
        if name in self._forward:
            want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(rdtype)
            return [a for a in self._forward[name] if ipaddress.ip_address(a).version == want]
        return None
