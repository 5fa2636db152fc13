"""The probe a vantage point runs: `python3 -c <this file> TIMEOUT ADDRESS PORT...`.

This file is never imported by mailcheck: bot/checks/vantage.py sends its text, as one
fixed argv word, to the vantage host over SSH (stdlib only, Python 3.6 and later). It
connects to every port at once, non-blocking, with IP_RECVERR / IPV6_RECVERR set (as
mailcheck's own prober does, bot/probes.py), and prints what the kernel said, raw, as
one JSON object: per port the connect's errno (0: connected; null: no answer within
TIMEOUT), the source address and the control messages of the socket error queue in hex.
mailcheck classifies them (bot.icmp.parse, bot.probes.classify_failure).
"""

import binascii
import errno
import json
import select
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

IP_RECVERR, IPV6_RECVERR = 11, 25  # <linux/in.h>, <linux/in6.h>


def probe(address, port, timeout):
    six = ":" in address
    s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if six:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        s.setblocking(False)
        start = time.monotonic()
        err = s.connect_ex((address, port))
        if err == errno.EINPROGRESS:
            _r, writable, _x = select.select([], [s], [], timeout)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else None
        out = {"port": port, "errno": err, "elapsed": round(time.monotonic() - start, 3),
               "source": s.getsockname()[0], "cmsg": []}
        for _ in range(16):
            try:
                _msg, anc, _flags, _addr = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:
                break
            out["cmsg"] += [[lvl, kind, binascii.hexlify(data).decode()] for lvl, kind, data in anc]
        return out
    finally:
        s.close()


def main(argv):
    timeout, address, ports = float(argv[0]), argv[1], [int(p) for p in argv[2:]]
    with ThreadPoolExecutor(max(1, len(ports))) as pool:
        probes = list(pool.map(lambda p: probe(address, p, timeout), ports))
    print(json.dumps({"address": address, "byteorder": sys.byteorder, "probes": probes}))


if __name__ == "__main__":
    main(sys.argv[1:])
