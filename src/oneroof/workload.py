"""An application that keeps writing: real concurrent clients for the demo, tests and benchmarks.

`Workload` runs `clients` threads, each with its own connection, committing one transaction
of `statements` at a steady `rate` (per second, all clients together) until stopped, and
records every transaction's latency and every failure. It plays the application against a
server oneroof started itself (`connect.open_admin`), never against a configured production.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from oneroof.connect import open_admin

# One-Roof's application: it files issues and renames objects, as its users do, each by an
# index lookup of a random object.
_RANDOM_OBJECT = (
    "(select o.id from core.objects o where o.id >= (select min(id) + floor(random()"
    " * (max(id) - min(id) + 1))::bigint from core.objects) order by o.id limit 1)"
)
ONE_ROOF = (
    f"insert into ops.issues (object_id, kind) select {_RANDOM_OBJECT}, 'data_quality'",
    "update core.objects set name = 'renamed ' || floor(random() * 1000000)::int"
    f" where id = {_RANDOM_OBJECT}",
)


@dataclass
class WorkloadStats:
    """What the application saw: committed and failed transactions, their latencies."""

    committed: int
    failed: int
    errors: list[str]
    latencies_ms: list[float]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def percentile(self, share: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
        return ordered[index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "failed": self.failed,
            "errors": self.errors[:5],
            "throughput_per_s": round(self.committed / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(self.percentile(0.5), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "max_ms": round(max(self.latencies_ms, default=0.0), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0,
        }


@dataclass
class Workload:
    """Clients committing `statements` at `rate` transactions per second until `stop()`."""

    dsn: str
    statements: Sequence[str] = ONE_ROOF
    rate: float = 20.0
    clients: int = 2
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _latencies: list[float] = field(default_factory=list, repr=False)
    _errors: list[str] = field(default_factory=list, repr=False)
    _started: float = 0.0

    def start(self) -> Workload:
        self._stop.clear()
        self._started = time.perf_counter()
        connections = [open_admin(self.dsn) for _ in range(self.clients)]
        for index, conn in enumerate(connections):
            thread = threading.Thread(
                target=self._client, args=(conn, index), name=f"workload-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _client(self, conn: psycopg.Connection[Any], index: int) -> None:
        interval = self.clients / self.rate if self.rate > 0 else 0.0
        due = time.perf_counter() + interval * index / max(1, self.clients)
        try:
            while not self._stop.is_set():
                pause = due - time.perf_counter()
                if pause > 0 and self._stop.wait(pause):
                    break
                due = max(due + interval, time.perf_counter())
                begun = time.perf_counter()
                try:
                    with conn.transaction():
                        for statement in self.statements:
                            conn.execute(statement)
                except psycopg.Error as exc:
                    with self._lock:
                        self._errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
                    continue
                with self._lock:
                    self._latencies.append((time.perf_counter() - begun) * 1000)
        finally:
            conn.close()

    def stop(self) -> WorkloadStats:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        with self._lock:
            return WorkloadStats(
                committed=len(self._latencies),
                failed=len(self._errors),
                errors=list(self._errors),
                latencies_ms=list(self._latencies),
                seconds=time.perf_counter() - self._started,
            )

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._threads:
            self.stop()
