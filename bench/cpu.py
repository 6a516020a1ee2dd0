"""CPU accounting shared by the benchmarks: process trees, and PostgreSQL's backends."""

from __future__ import annotations

import psutil


def tree(pid: int, exclude: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """A process and its descendants, leaving out the subtrees of ``exclude`` (measured on their own: the
    Prefect server that `customs serve` starts is its child, and was counted twice before this)."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    found = [root]
    try:
        children = root.children()
    except psutil.Error:
        return found
    for child in children:
        if child.pid not in exclude:
            found += tree(child.pid, exclude)
    return found


def tree_cpu(pid: int, exclude: frozenset[int] = frozenset()) -> float:
    """User + system CPU seconds of a process and its children (but the subtrees of ``exclude``)."""
    total = 0.0
    for proc in tree(pid, exclude):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class PostgresCpu:
    """CPU seconds PostgreSQL spent since this object was made: every postgres process, sampled with
    ``sample()`` (call it every second or so: a backend that exits keeps what was last seen of it)."""

    def __init__(self) -> None:
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        for pid, used in self._read().items():
            self.base[pid] = self.last[pid] = used

    @staticmethod
    def _read() -> dict[int, float]:
        out = {}
        for proc in psutil.process_iter(["name"]):
            if (proc.info["name"] or "").startswith("postgres"):
                try:
                    t = proc.cpu_times()
                    out[proc.pid] = t.user + t.system
                except psutil.Error:
                    pass
        return out

    def sample(self) -> None:
        for pid, used in self._read().items():
            self.base.setdefault(pid, 0.0)
            self.last[pid] = used

    def used(self) -> float:
        self.sample()
        return sum(self.last[pid] - self.base[pid] for pid in self.last)
