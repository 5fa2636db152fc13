"""Start a broken lab mail host, run `mailcheck check` on it, tear it down.

The host is a network namespace on this machine (see tests/labhost.py): real
sshd, Exim and Dovecot, and the guide's first firewall case (policy ACCEPT,
mail ports dropped in INPUT and OUTPUT). The outbound test's targets are lab mail
servers (listeners on the outside end of the host's link); RDAP and whois are off,
so the demo asks nothing of the internet. Needs root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.labhost import make_client_key, make_host, missing_prerequisites  # noqa: E402


def main(argv: list[str]) -> int:
    missing = missing_prerequisites()
    if missing:
        print("the demo needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    key = make_client_key(Path(tempfile.mkdtemp(prefix="mailcheck-demo-")))
    host = make_host(key)
    try:
        host.start_exim("public")
        host.start_dovecot(tls=True)
        host.sh("iptables", "-A", "INPUT", "-p", "tcp", "-m", "multiport",
                "--dports", "25,143,993,587,465", "-j", "DROP")
        host.sh("iptables", "-A", "OUTPUT", "-p", "tcp", "-m", "multiport",
                "--dports", "25,143,993,587,465", "-j", "DROP")
        print(f"lab host mx{host.index} at {host.ip}: exim and dovecot running, "
              "mail ports dropped by iptables (the guide's case 1)\n", file=sys.stderr)
        mailcheck = Path(sys.executable).with_name("mailcheck")  # .venv/bin/mailcheck
        cmd = [str(mailcheck) if mailcheck.exists() else "mailcheck", "check", f"root@{host.ip}",
               "-i", str(key), "--known-hosts", str(host.known_hosts), *argv]
        # Lab targets only: the outbound test connects to mail servers on this machine (the
        # outside end of the host's link), and the address's owner is not asked of the internet;
        # mailcheck's own DNS lookups go to the lab host's resolver (it knows only the lab's
        # names and refuses the rest): nothing leaves this machine
        o = host.outside_ip
        env = {**os.environ, "MAILCHECK_OUTBOUND_TARGETS": f"{o}:25, {o}:465, {o}:587",
               "MAILCHECK_RDAP_URL": "off", "MAILCHECK_WHOIS_SERVER": "off", "MAILCHECK_RESOLVERS": o}
        print("$ " + " ".join(f"{k}='{env[k]}'" for k in ("MAILCHECK_OUTBOUND_TARGETS", "MAILCHECK_RDAP_URL",
                                                        "MAILCHECK_WHOIS_SERVER", "MAILCHECK_RESOLVERS"))
              + " " + " ".join(cmd), file=sys.stderr)
        with host.outside_listener((25, 465, 587)):
            return subprocess.run(cmd, env=env).returncode
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
