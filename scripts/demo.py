"""Start a broken lab mail host, run `mailcheck check` on it, tear it down.

The host is a network namespace on this machine (see tests/labhost.py): real
sshd, Exim and Dovecot, and the guide's first firewall case (policy ACCEPT,
mail ports dropped in INPUT and OUTPUT). Needs root.
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
        print("$ " + " ".join(cmd), file=sys.stderr)
        # mailcheck's own DNS lookups go to the lab host's resolver (it knows only the lab's
        # names and refuses the rest): nothing leaves this machine
        env = {**os.environ, "MAILCHECK_RESOLVERS": host.outside_ip}
        return subprocess.run(cmd, env=env).returncode
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
