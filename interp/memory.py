"""Resident memory of this process: the peak over a block, sampled by a thread.

`resource.getrusage(...).ru_maxrss` is the peak of the whole process life, so it cannot say what one
step of a longer run needed. `PeakRSS` samples `/proc/self/statm` every `interval` seconds while its
block runs and keeps the largest value (a peak shorter than the interval can be missed; at the
default 2 ms that is a tensor alive for under 2 ms). Linux only; elsewhere both numbers are 0.

    >>> with PeakRSS() as rss:
    ...     block = bytearray(50 * 2**20)
    >>> rss.peak_mb - rss.start_mb > 40
    True

`trim_heap()` hands freed heap pages back to the system (glibc's `malloc_trim`), so the next block
starts from what is really in use.
"""

import ctypes
import os
import threading
import time


def rss_mb() -> float:
    """Resident set size now, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def trim_heap() -> None:
    """Return freed heap memory to the system where glibc allows it (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Context manager: `start_mb` (RSS on entry) and `peak_mb` (largest sample while inside)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start_mb = self.peak_mb = rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())
