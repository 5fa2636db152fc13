"""The packet path through nat PREROUTING and FORWARD on small iptables-save texts (issue 11).

The container corpus (tests/data/firewall/docker*, podman*, netavark*) checks the same
walk against the kernel's verdicts and traces; these pin the cases the corpus has no
recording of: forwarding off or unknown, no route, a REDIRECT to another port, the
replies of a forwarded connection, conntrack's original destination.
"""

from __future__ import annotations

from dataclasses import replace

from bot.firewall.analysis import Endpoints, port_verdict
from bot.firewall.model import Routes
from bot.firewall.parse.iptables import parse_save
from bot.firewall.parse.routes import parse_forwarding, parse_routes

HOST, PROBER, CIP = "198.18.9.2", "198.18.9.1", "198.19.9.2"
ROUTES = Routes((("198.18.9.0/30", "eth0"), ("198.19.9.0/24", "docker0")), forwarding=True)
ENDS = Endpoints(HOST, PROBER, "eth0", frozenset({HOST, "198.19.9.1"}), ROUTES)
NAT = f"""*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 25 -j DNAT --to-destination {CIP}:25
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 587 -j DNAT --to-destination {CIP}:587
-A DOCKER -p tcp -m tcp --dport 465 -j REDIRECT --to-ports 2465
COMMIT
"""


def verdict(filter_rules: str, port: int = 25, ends: Endpoints = ENDS, policy: str = "ACCEPT"):
    text = NAT + f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        f":DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n{filter_rules}COMMIT\n"
    rs = parse_save(text)
    assert not rs.problems
    return port_verdict(rs, ("inbound", "ipv4", port), ends)


def test_a_published_port_is_decided_in_forward_not_input():
    v = verdict("-A INPUT -p tcp -m tcp --dport 25 -j DROP\n")
    assert v.verdict == "allow" and v.forwarded and v.dnat_to == f"{CIP}:25"
    v = verdict("-A DOCKER-USER -i eth0 -p tcp -m tcp --dport 25 -j DROP\n")
    assert v.verdict == "block" and v.forwarded
    assert v.blocked_by == "iptables -t filter chain DOCKER-USER rule 1: -A DOCKER-USER -i eth0 -p tcp -m tcp --dport 25 -j DROP"
    assert verdict("-A DOCKER-USER -i eth0 -p tcp -m tcp --dport 25 -j DROP\n", 587).verdict == "allow"


def test_the_forward_rule_sees_the_translated_destination_and_the_original_in_conntrack():
    assert verdict(f"-A DOCKER-USER -d {CIP}/32 -p tcp -j DROP\n").verdict == "block"
    assert verdict(f"-A DOCKER-USER -d {HOST}/32 -p tcp -j DROP\n").verdict == "allow"
    rule = f"-A DOCKER-USER -p tcp -m conntrack --ctorigdst {HOST} --ctorigdstport 587 --ctdir ORIGINAL -j DROP\n"
    assert verdict(rule, 587).verdict == "block" and verdict(rule, 25).verdict == "allow"
    assert verdict("-A DOCKER-USER -m conntrack --ctstatus DNAT -j DROP\n").verdict == "block"
    # the output device is the route's: docker0
    assert verdict("-A DOCKER-USER -o docker0 -p tcp -j DROP\n").verdict == "block"
    assert verdict("-A DOCKER-USER -o eth0 -p tcp -m tcp --dport 25 -j DROP\n").verdict == "allow"
    assert verdict("-A DOCKER-USER -o eth0 -p tcp -j DROP\n").reply_blocked  # the container's answer leaves by eth0


def test_replies_of_a_forwarded_connection_cross_forward_too():
    accept_new = f"-A FORWARD -d {CIP}/32 -o docker0 -p tcp -m tcp --dport 25 -j ACCEPT\n"
    v = verdict(accept_new, policy="DROP")
    assert v.verdict == "block" and v.reply_blocked  # the container's answer hits FORWARD's policy
    assert "policy DROP of chain FORWARD" in v.blocked_by
    replies = "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n"
    assert verdict(accept_new + replies, policy="DROP").verdict == "allow"


def test_forwarding_off_blocks_and_unknown_forwarding_or_route_is_unknown():
    off = verdict("", ends=replace(ENDS, routes=replace(ROUTES, forwarding=False)))
    assert off.verdict == "block" and "net.ipv4.ip_forward = 0" in off.blocked_by and off.deciding.table is None
    unknown = verdict("", ends=replace(ENDS, routes=None))
    assert unknown.verdict == "unknown" and "whether this host forwards" in unknown.reasons[0]
    assert off.dnat_to == unknown.dnat_to == f"{CIP}:25"  # the translation is known either way
    no_route = verdict("", ends=replace(ENDS, routes=Routes((("198.18.9.0/30", "eth0"),), forwarding=True)))
    assert no_route.verdict == "unknown" and "no plain route" in no_route.reasons[0]


def test_a_redirect_to_another_local_port_is_unknown_and_to_this_host_goes_to_input():
    v = verdict("", 465)
    assert v.verdict == "unknown" and "whatever listens on 2465" in v.reasons[0]
    assert v.dnat_to == f"{HOST}:2465" and "REDIRECT --to-ports 2465" in v.delivered.nat_by  # where it goes
    local = NAT.replace(f"{CIP}:25", f"{HOST}:25")
    rs = parse_save(local + "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    v = port_verdict(rs, ("inbound", "ipv4", 25), ENDS)
    assert v.verdict == "block" and not v.forwarded and "policy DROP of chain INPUT" in v.blocked_by


def test_routes_and_forwarding_parse():
    text = ("default via 192.0.2.1 dev eth0 \n198.19.9.0/24 dev docker0 proto kernel scope link src 198.19.9.1"
            " linkdown \nblackhole 10.9.0.0/16 \nunreachable 10.8.0.0/16\n10.7.0.0/16 proto static\n"
            "\tnexthop via 192.0.2.2 dev eth0 weight 1\n")
    routes = Routes(parse_routes(text, "ipv4"), parse_forwarding("net.ipv4.ip_forward = 1"))
    assert routes.device("198.19.9.2") == "docker0" and routes.device("203.0.113.5") == "eth0"
    assert routes.device("10.9.1.1") is None and routes.device("10.8.1.1") is None  # blackhole, unreachable
    assert routes.device("10.7.1.1") is None  # multipath: not one device
    assert routes.forwarding is True and parse_forwarding("") is None
    assert Routes(parse_routes("default via fe80::1 dev eth0 metric 1024\n", "ipv6")).device("2001:db8::1") == "eth0"
