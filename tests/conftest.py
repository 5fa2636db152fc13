"""Every test that touches this machine leaves the root namespace's sysctls as it found
them (../shared/LAB.md: "Restore any root-namespace sysctl you change"). A changed one is
restored, and the test errors at teardown naming it: net.ipv4.ip_forward=1, for one,
routes whatever a lab host sends to a non-lab address off this machine.

No test's DNS lookup leaves this machine either: mailcheck's own resolver
(MAILCHECK_RESOLVERS) is, for the whole session, a responder on 127.0.0.1 that refuses
every question (tests/labdns.py), unless a test names a lab resolver in its Settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.guard import no_internet  # noqa: F401 - autouse: no test asks the internet
from tests.labdns import LabResolver

SYSCTL = Path("/proc/sys")
# Per-link entries come and go with the lab's links (and a host's own link may be set on
# purpose); these change by themselves.
IGNORED = re.compile(r"net/ipv[46]/(conf|neigh)/(?!all/|default/)[^/]+/|kernel/(ns_last_pid$|random/)")
MACHINE_FIXTURES = {"client_key", "image"}  # tests/lab/conftest.py's and test_container.py's
FIRST = ("net/ipv4/ip_forward",)  # writing it resets every link's forwarding and accept_redirects


def root_sysctls() -> dict[str, str]:
    """The writable sysctls of this (the root) namespace, by path under /proc/sys."""
    values = {}
    for root, dirs, files in os.walk(SYSCTL):
        rel = os.path.relpath(root, SYSCTL)
        dirs[:] = [d for d in dirs if not IGNORED.match(f"{rel}/{d}/")]
        for name in files:
            path = os.path.join(root, name)
            if IGNORED.match(f"{rel}/{name}"):
                continue
            try:
                if os.stat(path).st_mode & 0o200:
                    with open(path) as fh:
                        values[f"{rel}/{name}"] = fh.read()
            except OSError:
                continue  # write-only (vm/drop_caches) or gone meanwhile
    return values


def restore(before: dict[str, str]) -> list[str]:
    """Write back what changed since `before`; describe each change."""
    notes = []
    for pass_keys in (FIRST, None):
        now = root_sysctls()
        for key in pass_keys or sorted(now):
            if key in before and now.get(key) != before[key]:
                notes.append(f"{key.replace('/', '.')}: {before[key].strip()!r} -> {now[key].strip()!r}")
                try:
                    (SYSCTL / key).write_text(before[key])
                except OSError as e:
                    notes[-1] += f" (NOT restored: {e})"
    return notes


@pytest.fixture(autouse=True)
def _root_sysctls_restored(request):
    """Around every test that touches this machine: a lab host, the container, or marked lab."""
    if not (MACHINE_FIXTURES & set(request.fixturenames) or request.node.get_closest_marker("lab")):
        yield
        return
    before = root_sysctls()
    yield
    notes = restore(before)
    if notes:
        pytest.fail("root-namespace sysctls changed during this test (by it, or by another "
                    "process on this machine); restored: " + "; ".join(notes), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _dns_stays_on_this_machine():
    refuser = LabResolver("127.0.0.1", {}, port=0, zones=()).start()
    before = os.environ.get("MAILCHECK_RESOLVERS")
    os.environ["MAILCHECK_RESOLVERS"] = f"127.0.0.1:{refuser.port}"
    yield refuser
    if before is None:
        os.environ.pop("MAILCHECK_RESOLVERS", None)
    else:
        os.environ["MAILCHECK_RESOLVERS"] = before
    refuser.close()
