"""What one campaign measured: the only input of `verdicts.judge`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oneroof.clone import CloneVerification
from oneroof.clone.freshness import CloneRefresh
from oneroof.evidence import Record
from oneroof.fingerprint import Fingerprint
from oneroof.rollout import LedgerRow, Plan, Rehearsal
from oneroof.suite import RunResult


@dataclass
class Measurements:
    """Everything one campaign measured, for `verdicts.judge` to decide on."""

    started: str
    finished: str
    clone_name: str
    entry: Fingerprint
    exit: Fingerprint
    role_user: str
    role_excess: list[str]
    privileged_allowed: bool
    trusted: list[str]
    clone_created: bool
    isolation_before: CloneVerification
    isolation_after: CloneVerification
    isolation_facts: dict[str, Any]
    golden: str | None
    suites: dict[str, list[RunResult]]
    production_suites: dict[str, list[RunResult]]
    rehearsals: dict[str, tuple[Plan, Rehearsal]]
    ledgers: dict[str, list[LedgerRow]]
    gate_values: dict[str, Any]
    clone_source: Fingerprint | None
    clone_source_error: str | None
    clone_refresh: CloneRefresh  # whether the clone was out of date, and re-made
    audit: list[Record]
    activity_entry: dict[str, list[int]]  # table → rows inserted, updated, deleted (all sessions)
    activity_exit: dict[str, list[int]]
    expect_unchanged: bool
    production_sessions: int  # guarded sessions oneroof opened on production
    dump_sessions: int  # connections of the pg_dump runs (one more than its jobs)
