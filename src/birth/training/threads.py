"""How many torch threads a run gets: the cores that are free when it starts, fewer for small models.

A laptop is rarely idle. With 2 cores and one of them busy, torch's default (one thread per core)
makes every matrix product wait for the busy core: the quick demo then took 8 times its idle time,
against under 2 times with one thread. So ``birth train`` measures how busy the cores are (from
``/proc/stat``, over a tenth of a second) and uses only the free ones. ``--threads N`` or
``OMP_NUM_THREADS`` decide instead when given.
"""
from __future__ import annotations

import os
import time

# Below this many multiply-adds per step (batch x T x d^2), one thread is as fast as two: the
# products are too small to split (quick demo: 128 x 64 x 128^2 = 1.3e8 is above it).
SMALL_STEP = 2 ** 24


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_cores(interval: float = 0.1) -> float:
    """Cores kept busy by other processes, averaged over ``interval`` seconds (0.0 where /proc/stat
    cannot be read). This process sleeps meanwhile, so it does not count itself."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    if total1 <= total0:
        return 0.0
    cpus = os.cpu_count() or 1
    return cpus * (1 - (idle1 - idle0) / (total1 - total0))


def choose_threads(requested: int | None, work_per_step: float) -> tuple[int, str]:
    """(threads, why): ``requested`` (--threads) first, then OMP_NUM_THREADS, else the free cores,
    and 1 for a small model."""
    if requested:
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    if work_per_step < SMALL_STEP:
        return 1, "small model"
    cpus = usable_cpus()
    free = max(1, min(cpus, round(cpus - busy_cores())))
    return free, f"{free} of {cpus} cores free"
