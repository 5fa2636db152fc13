"""The DNS lab's two small servers, run inside the lab's namespace (see tests/dnslab.py).

    python dnslab_servers.py rewriter LISTEN_IP UPSTREAM_IP ANSWER_IP
        A resolver that forwards to UPSTREAM and turns every NXDOMAIN for an A
        query into an answer ANSWER_IP, as some ISP resolvers do (their ad
        pages). DNSBL answers through it look "listed" unless the client checks
        the RFC 5782 test entries.

    python dnslab_servers.py https LISTEN_IP ROOT CA_CERT CA_KEY WORKDIR
        HTTPS on LISTEN_IP:443 serving ROOT/<Host>/<path> (MTA-STS policies,
        RDAP answers). The certificate for each server name (SNI) is made on the
        fly (kept in WORKDIR) and signed by the lab CA, which only the tests'
        settings trust.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import sys
import threading
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset


def rewriter(listen: str, upstream: str, answer: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    while True:
        wire, peer = sock.recvfrom(65535)
        threading.Thread(target=_rewrite_one, args=(sock, wire, peer, upstream, answer),
                         daemon=True).start()


def _rewrite_one(sock, wire: bytes, peer, upstream: str, answer: str) -> None:
    try:
        query = dns.message.from_wire(wire)
        reply = dns.query.udp(query, upstream, timeout=5, ignore_unexpected=True)
        q = query.question[0]
        if reply.rcode() == dns.rcode.NXDOMAIN and q.rdtype == dns.rdatatype.A:
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.RA
            reply.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", answer))
        sock.sendto(reply.to_wire(), peer)
    except Exception as e:  # noqa: BLE001 - a lab server logs and goes on
        print(f"rewriter: {e!r}", file=sys.stderr, flush=True)


def _mint(name: str, ca_cert, ca_key, workdir: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    try:
        alt = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = workdir / f"{name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    return ctx


def https(listen: str, root: str, ca_cert_path: str, ca_key_path: str, work: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate(Path(ca_cert_path).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca_key_path).read_bytes(), None)
    workdir = Path(work)
    workdir.mkdir(exist_ok=True)
    contexts: dict[str, ssl.SSLContext] = {}
    lock = threading.Lock()

    def context_for(name: str) -> ssl.SSLContext:
        with lock:
            if name not in contexts:
                contexts[name] = _mint(name, ca_cert, ca_key, workdir)
                contexts[name].sni_callback = on_sni
            return contexts[name]

    def on_sni(sslsock, server_name, _ctx):
        sslsock.context = context_for(server_name or listen)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            host = (self.headers.get("Host") or listen).split(":")[0].lower().rstrip(".")
            self.directory = str(Path(root) / host)
            return super().translate_path(path)

        def log_message(self, fmt, *args):
            print(fmt % args, file=sys.stderr, flush=True)

    server = http.server.ThreadingHTTPServer((listen, 443), Handler)
    server.socket = context_for(listen).wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    {"rewriter": rewriter, "https": https}[sys.argv[1]](*sys.argv[2:])
