"""Peak memory and file descriptors of a process tree, sampled from /proc.

A tool that forks (Ansible's workers, its ssh clients) uses the memory of every process
it starts, so a sample sums them: the root process, its descendants, and processes it
started that left the tree (OpenSSH's ControlPersist masters daemonize), found by a marker
in their command line. RSS counts pages shared between forks once per process; PSS (from
smaps_rollup) shares them out, so the sum of PSS is the memory the tree really holds.
RSS and open descriptors are sampled every `interval` s, PSS every `pss_every` samples
(reading smaps_rollup of a hundred processes is not free).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Peaks:
    rss: int = 0  # bytes, the largest sum over the tree seen in one sample
    pss: int = 0
    fds: int = 0
    processes: int = 0
    samples: int = 0


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree(root: int, marker: str | None = None) -> list[int]:
    """`root` and its descendants, plus processes whose command line contains `marker`."""
    ppids = _ppids()
    pids, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in ppids.items():
            if ppid == parent and pid not in pids:
                pids.add(pid)
                todo.append(pid)
    if marker:
        for pid in ppids:
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace"):
                    pids.add(pid)
            except OSError:
                continue
    return sorted(pids)


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _pss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class Watch:
    """with Watch(pid, marker) as w: ... ; w.peaks"""

    def __init__(self, pid: int, marker: str | None = None, interval: float = 0.05,
                 pss_every: int = 10) -> None:
        self.pid, self.marker, self.interval, self.pss_every = pid, marker, interval, pss_every
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.sample(with_pss=n % self.pss_every == 0)
            n += 1
            time.sleep(self.interval)

    def sample(self, with_pss: bool = False) -> None:
        rss = pss = fds = count = 0
        for pid in tree(self.pid, self.marker):
            try:
                rss += _rss(pid)
                fds += len(os.listdir(f"/proc/{pid}/fd"))
                pss += _pss(pid) if with_pss else 0
                count += 1
            except OSError:
                continue  # it ended meanwhile
        p = self.peaks
        p.rss, p.fds, p.processes = max(p.rss, rss), max(p.fds, fds), max(p.processes, count)
        p.pss = max(p.pss, pss)
        p.samples += 1
