"""The container image builds and starts (podman + runc, base image made
locally with debootstrap, as in ../shared/LAB.md).

Without podman, runc, debootstrap or root the test says so: skipped with the
reason, or failed when MAILCHECK_CONTAINER=required. The containers it runs have no
network (--network=none) or the machine's own (--network=host, for `serve`): podman's
default bridge network would turn on net.ipv4.ip_forward in the root namespace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/bookworm-py"
IMAGE = "localhost/mailcheck-test"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
REQUIRED = ("podman", "runc", "debootstrap", "tar")  # tests/test_packages.py checks their packages


def _require() -> None:
    missing = [p for p in REQUIRED if not shutil.which(p)]
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        msg = ("container test needs: " + ", ".join(missing)
               + " (apt-get install -y podman runc debootstrap; see ../shared/LAB.md)")
        if os.environ.get("MAILCHECK_CONTAINER") == "required":
            pytest.fail(msg)
        pytest.skip(msg)


def _run(*argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def _ensure_base() -> None:
    if _run(*PODMAN, "image", "exists", BASE, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="mc-rootfs-") as rootfs:
        _run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip",
             "bookworm", rootfs, timeout=900)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*PODMAN, "import", "-", f"{BASE}:latest"], stdin=tar.stdout,
                       check=True, capture_output=True, timeout=600)
        tar.wait()


@pytest.fixture(scope="module")
def image() -> str:
    _require()
    _ensure_base()
    ca = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"] \
        if CA_BUNDLE.exists() else []
    build = _run(*PODMAN, "build", "--network=host", *ULIMITS, *ca, "--build-arg",
                 f"BASE_IMAGE={BASE}", "-t", IMAGE, str(ROOT), check=False, timeout=1200)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def _in_image(image: str, *argv: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    ep = ["--entrypoint", entrypoint] if entrypoint else []
    return _run(*PODMAN, "run", "--rm", "--network=none", *ULIMITS, *ep, image, *argv, check=False,
                timeout=120)


def test_image_runs_as_non_root_with_nothing_baked_in(image):
    assert _in_image(image, "-u", entrypoint="id").stdout.strip() != "0"
    listing = _in_image(image, "-c", "ls -A /etc/mailcheck /var/lib/mailcheck; "
                        "find / -xdev -name 'inventory*.yaml' -o -xdev -name 'id_ed25519*' "
                        "-o -xdev -name known_hosts -o -xdev -name .env | grep -v example",
                        entrypoint="sh").stdout
    assert listing.split() == ["/etc/mailcheck:", "/var/lib/mailcheck:"], listing
    ok = _in_image(image, "-c", "import bot.slack, handlers; print('ok')", entrypoint="python3")
    assert ok.stdout.strip() == "ok", ok.stderr


def test_mailcheck_help(image):
    out = _in_image(image, "--help")
    assert out.returncode == 0 and "serve" in out.stdout, out.stdout + out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_answers_healthz(image, tmp_path):
    from tests.slack.fake_slack import BOT_TOKEN, FakeSlack

    fake = await FakeSlack().start()
    port = _free_port()
    (tmp_path / "inventory.yaml").write_text("hosts:\n  mx1:\n    address: 198.18.250.2\n")
    tmp_path.chmod(0o755)
    name = f"mailcheck-test-{port}"
    proc = await asyncio.create_subprocess_exec(
        *PODMAN, "run", "--rm", "--name", name, "--network=host", *ULIMITS,
        "-v", f"{tmp_path}:/etc/mailcheck:ro", "-e", f"SLACK_BOT_TOKEN={BOT_TOKEN}",
        "-e", "SLACK_SIGNING_SECRET=s3cret", "-e", f"MAILCHECK_SLACK_API_URL={fake.api_url}",
        "-e", f"MAILCHECK_HTTP_PORT={port}", "-e", "MAILCHECK_HTTP_HOST=127.0.0.1", image, "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        state = await _poll_health(port, proc)
        assert state == {"ok": True, "mode": "http", "team": "T0LAB", "bot": "U0BOT",
                         "running_tasks": 0}
        assert fake.of("auth.test", ok=True)
    finally:
        _run(*PODMAN, "stop", "-t", "5", name, check=False)
        await asyncio.wait_for(proc.wait(), 30)
        await fake.stop()


async def _poll_health(port: int, proc) -> dict:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise AssertionError((await proc.stdout.read()).decode()[-3000:])
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    return await r.json()
            except aiohttp.ClientError:
                await asyncio.sleep(0.3)
    raise AssertionError("no /healthz answer within 60 s")
