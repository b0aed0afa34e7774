"""What the benchmarks share: one timed run, and the best of several."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best(repeat: int, action: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeat` runs, in ms, and the value of the last one."""
    times = []
    value = None
    for _ in range(repeat):
        start = time.perf_counter()
        value = action()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), value


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """One run's wall time in seconds, and its value."""
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value
