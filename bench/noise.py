"""How much of the machine other programs used while we measured ("foreign" CPU), and waiting for quiet.

On a shared machine another process's burst makes one run look slow. Each worker reports the share of the
machine's CPU time that was busy but not its own during its measured section (from ``/proc/stat`` and
``os.times``); the runner can wait for a quiet machine before a run and re-run a contaminated one. Linux
only: elsewhere the share is unknown (None) and nothing waits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_STAT = Path("/proc/stat")


def _busy_total() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, or None where unknown."""
    try:
        fields = [int(x) for x in _STAT.read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / tick, (busy + idle + iowait) / tick


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ForeignCPU:
    """``with ForeignCPU() as f: ...`` then ``f.share``: the machine's CPU time used by other processes
    during the block, as a share of all its CPU time (0 = we had the machine to ourselves)."""

    share: float | None = None

    def __enter__(self) -> ForeignCPU:
        self._start = _busy_total()
        self._own = _own_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _busy_total()
        if self._start is None or end is None:
            self.share = None
            return
        busy = end[0] - self._start[0]
        total = end[1] - self._start[1]
        own = _own_cpu() - self._own
        self.share = max(0.0, busy - own) / total if total > 0 else None


def wait_quiet(threshold: float = 0.05, max_wait: float = 60.0, window: float = 1.0) -> float | None:
    """Wait until other programs use less than ``threshold`` of the machine over ``window`` seconds, or
    ``max_wait`` seconds have passed. Returns the last share seen (None where unknown: no wait)."""
    deadline = time.monotonic() + max_wait
    while True:
        with ForeignCPU() as probe:
            time.sleep(window)
        if probe.share is None or probe.share < threshold or time.monotonic() >= deadline:
            return probe.share
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
