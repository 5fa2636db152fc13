"""Ansible on the fleet lab: the read-only commands mailcheck's checks declare, run by
ansible-core (from PyPI, in a virtual environment of its own under /tmp: not a mailcheck
dependency) with `-f FORKS`, watched like mailcheck (bench/procwatch.py).

The play is what an Ansible user would write for it: one `command` task looping over the
commands (argv, LC_ALL=C, each under the same `timeout` as mailcheck's), facts not
gathered, SSH pipelining on (one SSH session per command, over ControlPersist
connections), host keys checked against the lab's known_hosts.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.procwatch import Peaks, Watch, tree
from bot.transport import command_line

VENV = Path("/tmp/mailcheck-bench-ansible")


def ensure_ansible(venv: Path = VENV) -> Path:
    """ansible-playbook from venv, installing ansible-core there first if needed."""
    playbook = venv / "bin" / "ansible-playbook"
    if not playbook.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return playbook


def version(playbook: Path) -> str:
    out = subprocess.run([str(playbook), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


def write_files(workdir: Path, hosts: dict[str, str], key: Path, known_hosts: Path,
                commands) -> tuple[Path, Path]:
    """The inventory (name -> address) and the play running `commands` (bot.models.Command)."""
    inventory = workdir / "hosts.yaml"
    ssh_args = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {name: {"ansible_host": addr} for name, addr in hosts.items()},
        "vars": {"ansible_user": "root", "ansible_ssh_private_key_file": str(key),
                 "ansible_ssh_common_args": ssh_args,
                 "ansible_python_interpreter": "/usr/bin/python3"}}}))
    argvs = [_argv(c) for c in commands]
    play = [{"name": "mailcheck's read-only commands", "hosts": "all", "gather_facts": False,
             "tasks": [{"name": "run", "ansible.builtin.command": {"argv": "{{ item }}"},
                        "environment": {"LC_ALL": "C", "LANG": "C"},
                        "loop": argvs, "changed_when": False, "failed_when": False}]}]
    playbook = workdir / "play.yaml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    return inventory, playbook


def _argv(cmd) -> list[str]:
    """The words mailcheck's batch runs for `cmd`: `timeout -k 2 BUDGET argv...` (the
    environment, LC_ALL=C, is the task's)."""
    words = shlex.split(command_line(cmd))
    return words[words.index("timeout"):]


def run(playbook_bin: Path, inventory: Path, playbook: Path, forks: int, workdir: Path
        ) -> tuple[float, Peaks, dict[str, dict[str, int]]]:
    """(wall seconds, peaks of the process tree, the PLAY RECAP per host)."""
    control = workdir / f"cp{forks}-{time.monotonic_ns()}"
    control.mkdir()
    env = {**os.environ, "ANSIBLE_HOME": str(workdir / "home"), "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_PIPELINING": "True",
           "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_TIMEOUT": "10", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CONFIG": str(workdir / "none.cfg")}
    out = workdir / f"ansible-f{forks}.log"
    t0 = time.monotonic()
    with open(out, "w") as fh:
        proc = subprocess.Popen([str(playbook_bin), "-i", str(inventory), "-f", str(forks), str(playbook)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
        with Watch(proc.pid, marker=str(control)) as watch:
            proc.wait()
    wall = time.monotonic() - t0
    for pid in tree(os.getpid(), str(control)):  # the ControlPersist masters it left (ours)
        if pid != os.getpid() and str(control) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            os.kill(pid, signal.SIGTERM)
    return wall, watch.peaks, recap(out.read_text())


def recap(text: str) -> dict[str, dict[str, int]]:
    rows = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", text.split("PLAY RECAP", 1)[-1], re.M):
        rows[m[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
    return rows
