"""The forecast of an artifact: what it will do to a running production, measured on the clone.

A rehearsal measures each artifact's body on the clone, which holds production's rows from
the clone's source snapshot, so the figures are production-sized:

- its wall time;
- the relation locks its backend holds after the body (`pg_locks` of its own pid, the
  strongest mode per relation, only those the body itself took); an artifact that runs in
  no transaction holds them only while its statement runs, so a second session samples
  `pg_locks` for its pid meanwhile;
- table rewrites (`pg_class.relfilenode` changed) and index builds (new or rebuilt indexes);
- constraints added or validated, and the rows the validation scanned
  (`pg_stat_xact_user_tables`);
- the WAL it wrote (`pg_current_wal_insert_lsn()` before and after: the server's insert
  position, so concurrent writers on the non-production server add to it);
- the rows of every table it names (counted; estimated from `reltuples` above a million).

`judge` then decides, as a pure function of those facts and `[rollout] hazard_rows` /
`hazard_lock_ms`, which are hazards, each with its reason and the safer pattern; the text
forms (`summary`, `headline`) are pure over the stored dictionaries, so `plan`, `status` and
the report read them back from the evidence store. docs/forecast.md documents the JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pglast
import psycopg
from psycopg import sql as pgsql

from oneroof.connect import PRODUCTION, Session, lsn_value
from oneroof.errors import ForbiddenAction
from oneroof.rollout.artifact import Counts

# pg_locks' modes, weakest first: a mode conflicts with more of the others the later it comes
LOCK_MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
# from this mode on a lock blocks the application's writes for as long as it is held
STRONG_LOCK = "ShareRowExclusiveLock"
# above this many rows (pg_class.reltuples) a table's rows are estimated, not counted
COUNT_LIMIT = 1_000_000

_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "v": "view",
    "f": "foreign table",
    "i": "index",
    "I": "partitioned index",
}
_TABLES = ("table", "partitioned table", "materialized view")
_CONSTRAINT_TYPES = {
    "f": "foreign key",
    "c": "check",
    "u": "unique",
    "p": "primary key",
    "x": "exclusion",
}
_USER = (
    "n.nspname not in ('pg_catalog', 'information_schema')"
    " and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"
)
_RELATIONS = (
    "select c.oid::bigint, n.nspname::text || '.' || c.relname::text, c.relkind::text,"
    " c.relfilenode::bigint, c.reltuples::float8"
    " from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
    f" where c.relkind in ('r', 'p', 'm', 'v', 'f', 'i', 'I') and {_USER}"
)
_INDEXES = (
    "select i.indexrelid::bigint, i.indrelid::bigint, i.indisvalid"
    " from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid"
    f" join pg_catalog.pg_namespace n on n.oid = c.relnamespace where {_USER}"
)
_CONSTRAINTS = (
    "select k.oid::bigint, k.conrelid::bigint, k.conname::text, k.contype::text, k.convalidated,"
    " k.confrelid::bigint"
    " from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid"
    " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
    f" where k.contype in ('f', 'c', 'u', 'p', 'x') and {_USER}"
)
# NOT NULL is a column's attnotnull on every major (18 also stores it as a constraint)
_COLUMNS = (
    "select a.attrelid::bigint, a.attname::text, a.attnotnull"
    " from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid"
    " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
    f" where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p') and {_USER}"
)
_OWN_LOCKS = (
    "select l.relation::bigint, l.mode::text from pg_catalog.pg_locks l"
    " where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'relation' and l.granted"
)
_LOCKS_OF = (
    "select l.relation::bigint, l.mode::text from pg_catalog.pg_locks l"
    " where l.pid = %s and l.locktype = 'relation' and l.granted"
)
_WAITING = "select wait_event = 'virtualxid' from pg_catalog.pg_stat_activity where pid = %s"
# what the open transaction read and wrote per table so far: scans, rows read, rows written
_STATS = (
    "select relid::bigint, seq_scan + coalesce(idx_scan, 0),"
    " seq_tup_read + coalesce(idx_tup_fetch, 0), n_tup_ins + n_tup_upd + n_tup_del"
    " from pg_catalog.pg_stat_xact_user_tables"
)
WAL_POSITION = "select pg_catalog.pg_current_wal_insert_lsn()::text"


def mode_name(mode: str) -> str:
    """`ShareRowExclusiveLock` → `SHARE ROW EXCLUSIVE`, as the PostgreSQL manual writes it."""
    words: list[str] = []
    for char in mode.removesuffix("Lock"):
        if char.isupper() and words:
            words.append(" ")
        words.append(char.upper())
    return "".join(words)


def mode_rank(mode: str) -> int:
    """The position of a pg_locks mode, weakest first (an unknown mode ranks lowest)."""
    return LOCK_MODES.index(mode) if mode in LOCK_MODES else -1


def strongest(modes: Iterable[str]) -> str:
    """The strongest of pg_locks modes."""
    return max(modes, key=mode_rank)


def size_text(count: int) -> str:
    """Bytes the way `pg_size_pretty` shows them (`312 bytes`, `61 kB`, `14 MB`)."""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(value) < 10 * 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} TB"


def ms_text(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


# -- the facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelationLock:
    """The strongest lock the artifact's body took on one relation."""

    relation: str
    mode: str  # as pg_locks names it
    kind: str
    rows: int | None
    new: bool = False  # the artifact created the relation: no other session can wait on it
    # an earlier artifact of the rehearsal's one transaction held it already: at most `mode`
    held_before: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "mode": mode_name(self.mode),
            "kind": self.kind,
            "rows": self.rows,
            "new": self.new,
            "held_before": self.held_before,
        }


@dataclass(frozen=True)
class Rewrite:
    """A relation that got a new relfilenode: every row copied (or, by TRUNCATE, none kept)."""

    relation: str
    kind: str
    rows: int | None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "kind": self.kind,
            "rows": self.rows,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class IndexBuild:
    """An index the artifact built (or rebuilt), on a table of `rows` rows."""

    index: str
    table: str
    rows: int | None
    concurrently: bool
    valid: bool
    rebuilt: bool = False
    new_table: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "table": self.table,
            "rows": self.rows,
            "concurrently": self.concurrently,
            "valid": self.valid,
            "rebuilt": self.rebuilt,
            "new_table": self.new_table,
        }


@dataclass(frozen=True)
class ConstraintChange:
    """A constraint the artifact added or validated; `validated` means every row was checked."""

    name: str
    table: str
    type: str
    action: str  # added | validated
    validated: bool
    rows: int | None
    scanned_rows: int | None  # rows of the table its scans read (a transactional artifact)
    new_table: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "type": self.type,
            "action": self.action,
            "validated": self.validated,
            "not_valid": not self.validated,
            "rows": self.rows,
            "scanned_rows": self.scanned_rows,
            "new_table": self.new_table,
        }


@dataclass(frozen=True)
class Hazard:
    """What a forecast says production would suffer, why, and the safer way to do it."""

    kind: str  # lock | rewrite | constraint | index | timeout
    relation: str
    reason: str
    safer: str

    def describe(self) -> str:
        return f"{self.reason} — safer: {self.safer}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "relation": self.relation,
            "reason": self.reason,
            "safer": self.safer,
        }


def refusal(hazards: Sequence[Hazard]) -> str:
    """The reason an artifact is refused: each hazard, then each safer pattern once."""
    safer = dict.fromkeys(h.safer for h in hazards)
    return (
        '[rollout] hazards = "refuse": '
        + "; ".join(h.reason for h in hazards)
        + " — safer: "
        + " / ".join(safer)
    )


@dataclass
class Forecast:
    """One artifact's measured impact (see the module's docstring)."""

    ms: float
    wal_bytes: int
    locks: list[RelationLock] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    indexes: list[IndexBuild] = field(default_factory=list)
    constraints: list[ConstraintChange] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    deltas: Counts = field(default_factory=dict)
    transaction: bool = True
    lock_ms: float = 0.0
    sampled: bool = False  # locks seen by a second session while the statements ran
    estimated: list[str] = field(default_factory=list)  # rows from reltuples, not counted
    hazards: list[Hazard] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Forecast:
        """A forecast from its stored form (`to_dict`), as a rehearsal record keeps it."""
        modes = {mode_name(mode): mode for mode in LOCK_MODES}
        return cls(
            ms=float(data.get("ms") or 0.0),
            wal_bytes=int(data.get("wal_bytes") or 0),
            locks=[
                RelationLock(
                    str(lock["relation"]),
                    modes.get(str(lock["mode"]), str(lock["mode"])),
                    str(lock.get("kind") or "table"),
                    lock.get("rows"),
                    bool(lock.get("new")),
                    bool(lock.get("held_before")),
                )
                for lock in data.get("locks") or []
            ],
            rewrites=[
                Rewrite(str(r["relation"]), str(r["kind"]), r.get("rows"), bool(r.get("truncated")))
                for r in data.get("rewrites") or []
            ],
            indexes=[
                IndexBuild(
                    str(i["index"]),
                    str(i["table"]),
                    i.get("rows"),
                    bool(i.get("concurrently")),
                    bool(i.get("valid")),
                    bool(i.get("rebuilt")),
                    bool(i.get("new_table")),
                )
                for i in data.get("indexes") or []
            ],
            constraints=[
                ConstraintChange(
                    str(c["name"]),
                    str(c["table"]),
                    str(c["type"]),
                    str(c["action"]),
                    bool(c.get("validated")),
                    c.get("rows"),
                    c.get("scanned_rows"),
                    bool(c.get("new_table")),
                )
                for c in data.get("constraints") or []
            ],
            scanned={str(k): int(v) for k, v in (data.get("scanned_rows") or {}).items()},
            deltas={str(k): dict(v) for k, v in (data.get("deltas") or {}).items()},
            transaction=data.get("transaction", "one") != "none",
            lock_ms=float(data.get("lock_ms") or 0.0),
            sampled=bool(data.get("locks_sampled")),
            estimated=[str(r) for r in data.get("rows_estimated") or []],
            hazards=[
                Hazard(str(h["kind"]), str(h["relation"]), str(h["reason"]), str(h["safer"]))
                for h in data.get("hazards") or []
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.ms, 3),
            "lock_ms": round(self.lock_ms, 3),
            "wal_bytes": self.wal_bytes,
            "transaction": "one" if self.transaction else "none",
            "locks": [lock.to_dict() for lock in self.locks],
            "locks_sampled": self.sampled,
            "rewrites": [r.to_dict() for r in self.rewrites],
            "indexes": [i.to_dict() for i in self.indexes],
            "constraints": [c.to_dict() for c in self.constraints],
            "scanned_rows": dict(sorted(self.scanned.items())),
            "deltas": self.deltas,
            "rows_estimated": self.estimated,
            "hazards": [h.to_dict() for h in self.hazards],
        }


# -- the hazards: pure decisions ----------------------------------------------------------------


_SAFER_LOCK = (
    "keep the strong lock short: put the slow work (backfill, validation, index build) in "
    "artifacts of its own, and let [rollout] lock_timeout bound the wait"
)
_SAFER_REWRITE = (
    "add the column without a default or with a constant one (PostgreSQL 11+ then rewrites "
    "nothing), backfill it in batches in later artifacts, then set the default; for a type "
    "change, add a new column and switch over"
)
_SAFER_CONSTRAINT = (
    "ALTER TABLE … ADD CONSTRAINT … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT … in a "
    "later artifact: the scan then holds SHARE UPDATE EXCLUSIVE, which blocks neither reads "
    "nor writes"
)
_SAFER_NOT_NULL = (
    "add CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a later artifact, "
    "then SET NOT NULL (PostgreSQL 12+ trusts the valid CHECK and skips the scan)"
)
_SAFER_INDEX = (
    "CREATE INDEX CONCURRENTLY … in an artifact with `-- transaction: none` (for a primary key "
    "or unique constraint: build the index concurrently, then ADD CONSTRAINT … USING INDEX)"
)
_SAFER_REINDEX = "REINDEX … CONCURRENTLY in an artifact with `-- transaction: none`"


def _rows(rows: int | None) -> str:
    return "rows unknown" if rows is None else f"{rows:,} rows"


def judge(
    forecast: Forecast,
    hazard_rows: int,
    hazard_lock_ms: float,
    timeout_ms: float | None = None,
) -> list[Hazard]:
    """The hazards among a forecast's facts: strong locks on large tables or held long,
    rewrites, validating constraints and blocking index builds of large tables, and a run
    too close to the apply's statement timeout (`timeout_ms`) to finish on production."""

    def large(rows: int | None) -> bool:
        return rows is not None and rows > hazard_rows

    hazards: list[Hazard] = []
    rewritten = {r.relation for r in forecast.rewrites if not r.truncated}
    validated = {c.table for c in forecast.constraints if c.validated and c.action == "added"}
    for lock in forecast.locks:
        if lock.new or lock.kind not in _TABLES or mode_rank(lock.mode) < mode_rank(STRONG_LOCK):
            continue
        long_held = forecast.lock_ms > hazard_lock_ms
        if not (large(lock.rows) or long_held):
            continue
        blocks = "reads and writes" if lock.mode == "AccessExclusiveLock" else "writes"
        held = f", held {ms_text(forecast.lock_ms)}" if long_held else ""
        safer = _SAFER_LOCK
        if lock.relation in rewritten:
            safer = _SAFER_REWRITE
        elif lock.relation in validated:
            safer = _SAFER_CONSTRAINT
        hazards.append(
            Hazard(
                "lock",
                lock.relation,
                f"{'at most ' if lock.held_before else ''}{mode_name(lock.mode)} on "
                f"{lock.relation} ({_rows(lock.rows)}{held}): it blocks the application's "
                f"{blocks} until the artifact commits",
                safer,
            )
        )
    for rewrite in forecast.rewrites:
        if rewrite.truncated or rewrite.kind not in _TABLES or not large(rewrite.rows):
            continue
        hazards.append(
            Hazard(
                "rewrite",
                rewrite.relation,
                f"{rewrite.relation} is rewritten ({_rows(rewrite.rows)} copied to a new "
                "relfilenode) under ACCESS EXCLUSIVE, writing about its size in WAL",
                _SAFER_REWRITE,
            )
        )
    for constraint in forecast.constraints:
        if constraint.action != "added" or not constraint.validated or constraint.new_table:
            continue
        if constraint.type not in ("foreign key", "check", "not null"):
            continue  # unique, primary key, exclusion: their index build is judged below
        if not large(constraint.rows):
            continue
        scanned = (
            f", {constraint.scanned_rows:,} rows read"
            if constraint.scanned_rows is not None
            else ""
        )
        hazards.append(
            Hazard(
                "constraint",
                constraint.table,
                f"{constraint.type} {constraint.name} added to {constraint.table} without NOT "
                f"VALID: every one of its {_rows(constraint.rows)} is checked while the lock "
                f"is held{scanned}",
                _SAFER_NOT_NULL if constraint.type == "not null" else _SAFER_CONSTRAINT,
            )
        )
    for index in forecast.indexes:
        if index.concurrently or index.new_table or not large(index.rows):
            continue
        verb = "rebuilt" if index.rebuilt else "built"
        hazards.append(
            Hazard(
                "index",
                index.table,
                f"index {index.index} {verb} without CONCURRENTLY on {index.table} "
                f"({_rows(index.rows)}): its SHARE lock blocks the application's writes while "
                "it builds",
                _SAFER_REINDEX if index.rebuilt else _SAFER_INDEX,
            )
        )
    # production under its load may well take twice the clone's time: half is the margin
    if timeout_ms is not None and forecast.ms * 2 > timeout_ms:
        hazards.append(
            Hazard(
                "timeout",
                "",
                f"the rehearsal took {ms_text(forecast.ms)}, more than half of [rollout] "
                f"statement_timeout ({ms_text(timeout_ms)}): on production it may be cancelled",
                "raise [rollout] statement_timeout, or split the artifact into smaller batches",
            )
        )
    return hazards


def hazard_check(policy: str, payload: Mapping[str, Any] | None) -> tuple[bool, str]:
    """The apply's check of the rehearsal's hazards under the current `[rollout] hazards`."""
    if payload is None:
        return True, "no rehearsal forecast to judge"
    found = [
        (artifact_id, hazard)
        for artifact_id, forecast in forecasts_of(payload).items()
        for hazard in forecast.get("hazards") or []
    ]
    if not found:
        return True, "the rehearsal's forecast names no hazard"
    shown = "; ".join(f"{a}: {h.get('reason')}" for a, h in found[:3])
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    if policy == "refuse":
        return False, (
            f'refused ([rollout] hazards = "refuse"): {shown}{more}; use the safer pattern '
            '`oneroof rollout rehearse` names, or set hazards = "warn"'
        )
    return True, f"{len(found)} hazard(s), warned only: {shown}{more}"


# -- text forms, over the stored dictionaries -------------------------------------------------


def forecasts_of(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifact id → forecast dictionary, from a rehearsal record's payload."""
    return {
        str(run.get("id")): run["forecast"]
        for run in payload.get("artifacts") or []
        if isinstance(run.get("forecast"), Mapping)
    }


def _main_lock(locks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    shown = [lock for lock in locks if not lock.get("new")] or list(locks)
    if not shown:
        return None
    ranks = {mode_name(m): i for i, m in enumerate(LOCK_MODES)}
    return max(
        shown, key=lambda lock: (ranks.get(str(lock.get("mode")), -1), lock.get("rows") or 0)
    )


def written_rows(deltas: Mapping[str, Mapping[str, int]]) -> int:
    """The rows an artifact inserted, updated and deleted, over every table."""
    return sum(
        int(counts.get(kind) or 0)
        for counts in deltas.values()
        for kind in ("inserted", "updated", "deleted")
    )


def _of(rows: Any) -> str:
    return f" ({int(rows):,} rows)" if rows is not None else ""


def summary(artifact_id: str, forecast: Mapping[str, Any]) -> str:
    """`F_02: ROW EXCLUSIVE on core.ownership, 14 ms, 61 kB WAL, 210 rows; no hazard`: the
    strongest lock, time, WAL and the rows the artifact writes; a table's own size where a
    rewrite, an index build or a validation has to read all of it."""
    lock = _main_lock(forecast.get("locks") or [])
    parts = [
        (
            f"{'at most ' if lock.get('held_before') else ''}{lock.get('mode')} on "
            f"{lock.get('relation')}"
        )
        if lock is not None
        else "no table lock",
        ms_text(float(forecast.get("ms") or 0)),
        f"{size_text(int(forecast.get('wal_bytes') or 0))} WAL",
        f"{written_rows(forecast.get('deltas') or {}):,} rows",
    ]
    for rewrite in forecast.get("rewrites") or []:
        verb = "truncates" if rewrite.get("truncated") else "rewrites"
        size = "" if rewrite.get("truncated") else _of(rewrite.get("rows"))
        parts.append(f"{verb} {rewrite.get('relation')}{size}")
    for index in forecast.get("indexes") or []:
        how = " CONCURRENTLY" if index.get("concurrently") else ""
        verb = "rebuilds" if index.get("rebuilt") else "builds"
        valid = "" if index.get("valid") else " (left INVALID)"
        parts.append(
            f"{verb} index {index.get('index')}{how} on {index.get('table')}"
            f"{_of(index.get('rows'))}{valid}"
        )
    for constraint in forecast.get("constraints") or []:
        rows = constraint.get("rows")
        if constraint.get("not_valid"):
            state = "NOT VALID"
        else:
            state = "validated" + (f", {int(rows):,} rows" if rows is not None else "")
        parts.append(
            f"{'validates' if constraint.get('action') == 'validated' else 'adds'} "
            f"{constraint.get('type')} {constraint.get('name')} ({state})"
        )
    hazards = forecast.get("hazards") or []
    named = dict.fromkeys(
        f"{h.get('kind')} on {h.get('relation')}" if h.get("relation") else str(h.get("kind"))
        for h in hazards
    )
    tail = f"{len(hazards)} hazard(s): {', '.join(named)}" if hazards else "no hazard"
    return f"{artifact_id}: {', '.join(parts)}; {tail}"


def headline(forecasts: Mapping[str, Mapping[str, Any]]) -> str:
    """The report's clause: every artifact's forecast, shortest form."""
    if not forecasts:
        return ""
    return "forecast: " + " | ".join(summary(a, f) for a, f in forecasts.items())


def actual_text(
    forecast: Mapping[str, Any] | None, duration_ms: float | None, wal_bytes: int | None
) -> str:
    """`forecast 14 ms, 61 kB WAL; actual 12 ms, 70 kB WAL` for one applied artifact."""
    if duration_ms is None and forecast is None:
        return ""
    parts = []
    if forecast is not None:
        parts.append(
            f"forecast {ms_text(float(forecast.get('ms') or 0))}, "
            f"{size_text(int(forecast.get('wal_bytes') or 0))} WAL"
        )
    if duration_ms is not None:
        wal = f", {size_text(int(wal_bytes))} WAL" if wal_bytes is not None else ""
        parts.append(f"actual {ms_text(float(duration_ms))}{wal}")
    return "; ".join(parts)


def plan_forecast(
    forecasts: Mapping[str, Forecast],
    *,
    policy: str,
    hazard_rows: int,
    hazard_lock_ms: int,
    mode: str,
    server: Mapping[str, Any],
) -> dict[str, Any]:
    """The plan-level forecast of a rehearsal record (signed by approvals with the rest)."""
    return {
        "policy": policy,
        "hazard_rows": hazard_rows,
        "hazard_lock_ms": hazard_lock_ms,
        "mode": mode,
        **server,
        "ms": round(sum(f.ms for f in forecasts.values()), 3),
        "wal_bytes": sum(f.wal_bytes for f in forecasts.values()),
        "hazards": [
            {"artifact": artifact_id, **hazard.to_dict()}
            for artifact_id, forecast in forecasts.items()
            for hazard in forecast.hazards
        ],
    }


# -- the measurement ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    relations: dict[int, tuple[str, str, int, float]]  # oid → name, kind, relfilenode, reltuples
    indexes: dict[int, tuple[int, bool]]  # index oid → table oid, valid
    # oid → table, name, type, validated, referenced table (0: none)
    constraints: dict[int, tuple[int, str, str, bool, int]]
    columns: dict[tuple[int, str], bool]  # (table oid, column) → NOT NULL

    @classmethod
    def read(cls, session: Session) -> _Catalog:
        return cls(
            {
                int(oid): (str(name), _KINDS.get(str(kind), str(kind)), int(node), float(tuples))
                for oid, name, kind, node, tuples in session.execute(_RELATIONS)
            },
            {int(i): (int(t), bool(v)) for i, t, v in session.execute(_INDEXES)},
            {
                int(oid): (int(rel), str(name), _CONSTRAINT_TYPES[str(kind)], bool(valid), int(ref))
                for oid, rel, name, kind, valid, ref in session.execute(_CONSTRAINTS)
            },
            {(int(rel), str(name)): bool(nn) for rel, name, nn in session.execute(_COLUMNS)},
        )


def _locks(rows: Iterable[tuple[Any, ...]]) -> dict[int, set[str]]:
    held: dict[int, set[str]] = {}
    for relation, mode in rows:
        held.setdefault(int(relation), set()).add(str(mode))
    return held


def _stats(session: Session) -> dict[int, tuple[int, int, int]]:
    return {
        int(rel): (int(scans), int(read), int(written))
        for rel, scans, read, written in session.execute(_STATS)
    }


def wal_position(session: Session) -> str:
    """The server's WAL insert position now (through the guard on production)."""
    return str(session.scalar(WAL_POSITION))


def wal_between(before: str, after: str) -> int:
    return max(0, lsn_value(after) - lsn_value(before))


def concurrent_indexes(statements: Iterable[str]) -> set[str]:
    """The (unqualified) names of the indexes `CREATE INDEX CONCURRENTLY` / `REINDEX …
    CONCURRENTLY` statements build: a forecast's fact read from the text that ran."""
    names: set[str] = set()
    for text in statements:
        try:
            nodes = pglast.parse_sql(text)
        except pglast.parser.ParseError:
            continue
        for raw in nodes:
            node = raw.stmt
            if isinstance(node, pglast.ast.IndexStmt) and node.concurrent and node.idxname:
                names.add(str(node.idxname))
            if (
                isinstance(node, pglast.ast.ReindexStmt)
                and node.relation is not None
                and "concurrently" in {str(o.defname) for o in node.params or ()}
            ):
                names.add(str(node.relation.relname))
    return names


class LockSampler:
    """A second session polls `pg_locks` for the rehearsal's backend while a statement runs:
    a statement in no transaction keeps its locks only while it runs.

    A fast statement could end between two polls, so the sampler first opens a transaction
    with a snapshot: `CREATE INDEX CONCURRENTLY` and `REINDEX … CONCURRENTLY` wait for every
    older snapshot before they finish, which holds them, locks taken, until the sampler has
    seen them waiting with those locks and ends its transaction. A statement that waits for
    no snapshot (VACUUM, ANALYZE) is sampled as it runs.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        pid: int,
        seen: dict[int, set[str]] | None = None,
        interval: float = 0.002,
    ):
        self.conn = conn
        self.pid = pid
        self.interval = interval
        self.seen: dict[int, set[str]] = {} if seen is None else seen
        self.samples = 0
        self._stop = threading.Event()
        self._holding = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oneroof-lock-sampler", daemon=True)
        self.error: str | None = None

    def _run(self) -> None:
        holding = True
        try:
            self.conn.execute("begin isolation level repeatable read")
            self.conn.execute("select 1")  # the snapshot the statement waits for
            self._holding.set()
            while not self._stop.is_set():
                rows = self.conn.execute(_LOCKS_OF, (self.pid,)).fetchall()
                self.samples += 1
                for relation, modes in _locks(rows).items():
                    self.seen.setdefault(relation, set()).update(modes)
                if holding and rows and self._waiting():
                    self.conn.execute("commit")  # its locks seen: let the statement finish
                    holding = False
                self._stop.wait(self.interval)
        except psycopg.Error as exc:
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
        finally:
            self._holding.set()
            if holding and not self.conn.closed:
                try:
                    self.conn.execute("rollback")
                except psycopg.Error:
                    self.conn.close()  # a snapshot must not outlive the sampler

    def _waiting(self) -> bool:
        """The statement waits for a transaction to end (ours): every lock it takes is held."""
        row = self.conn.execute(_WAITING, (self.pid,)).fetchone()
        return bool(row and row[0])

    def __enter__(self) -> LockSampler:
        self._thread.start()
        self._holding.wait(timeout=10)  # the snapshot exists before the statement starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Probe:
    """The clone before an artifact's body; `finish` measures what the body did."""

    def __init__(self, session: Session, *, transactional: bool) -> None:
        if session.role == PRODUCTION:
            raise ForbiddenAction("refused: a forecast is measured on the clone, never production")
        self.session = session
        self.transactional = transactional
        self.catalog = _Catalog.read(session)
        self.locks_before = _locks(session.execute(_OWN_LOCKS)) if transactional else {}
        self.stats_before = _stats(session) if transactional else {}
        self.lsn_before = wal_position(session)
        self.locks_after: dict[int, set[str]] = {}
        self.stats_after: dict[int, tuple[int, int, int]] = {}
        self.lsn_after = self.lsn_before
        self.ms = 0.0
        self._started = time.perf_counter()

    def body_done(self) -> None:
        """Right after the body: its time, WAL, locks and scans, before anything else reads."""
        self.ms = (time.perf_counter() - self._started) * 1000
        self.lsn_after = wal_position(self.session)
        if self.transactional:
            self.locks_after = _locks(self.session.execute(_OWN_LOCKS))
            self.stats_after = _stats(self.session)

    def finish(
        self,
        deltas: Counts,
        *,
        truncated: Iterable[str] = (),
        sampled: Mapping[int, set[str]] | None = None,
        concurrent: Iterable[str] = (),
    ) -> Forecast:
        """The forecast: catalog after, rows of every relation named, no hazard judged yet."""
        before, after = self.catalog, _Catalog.read(self.session)
        truncated_set = set(truncated)
        new_oids = set(after.relations) - set(before.relations)
        rewrites = {
            oid
            for oid, (_, kind, node, _) in after.relations.items()
            if oid in before.relations
            and kind in _TABLES
            and before.relations[oid][2] not in (0, node)
        }
        indexes: list[tuple[int, bool, bool]] = []  # index oid, rebuilt, valid
        old_names = {before.relations[i][0] for i in before.indexes if i in before.relations}
        for index_oid, (table_oid, valid) in after.indexes.items():
            if table_oid in rewrites or index_oid not in after.relations:
                continue  # a rewrite rebuilds its table's indexes: the rewrite says so
            name = after.relations[index_oid][0]
            if index_oid not in before.indexes:
                indexes.append((index_oid, name in old_names, valid))
            elif (
                before.relations.get(index_oid, ("", "", 0, 0))[2] != after.relations[index_oid][2]
            ):
                indexes.append((index_oid, True, valid))
        constraints: list[tuple[int, str, str, str, bool]] = []  # table, name, type, action, valid
        referenced: set[int] = set()
        for oid, (table_oid, name, kind, valid, ref) in after.constraints.items():
            old = before.constraints.get(oid)
            if old is None:
                constraints.append((table_oid, name, kind, "added", valid))
            elif valid and not old[3]:
                constraints.append((table_oid, name, kind, "validated", valid))
            else:
                continue
            if ref:
                referenced.add(ref)
        for (table_oid, column), not_null in after.columns.items():
            if not_null and before.columns.get((table_oid, column)) is False:
                constraints.append((table_oid, f"{column} NOT NULL", "not null", "added", True))
        # the relations whose definition the body changed (DDL on them)
        reshaped = rewrites | referenced | {c[0] for c in constraints}
        reshaped |= {after.indexes[i][0] for i, _, _ in indexes}
        reshaped |= {t for t, _ in set(after.columns) ^ set(before.columns)}
        lock_modes, held_before = self._lock_modes(after, sampled, reshaped)

        named = set(lock_modes) | rewrites
        named |= {after.indexes[i][0] for i, _, _ in indexes}
        named |= {c[0] for c in constraints}
        rows, estimated = self._rows(named, after, deltas)

        def label(oid: int) -> str:
            return after.relations[oid][0] if oid in after.relations else str(oid)

        scanned = {
            label(oid): read - self.stats_before.get(oid, (0, 0, 0))[1]
            for oid, (_, read, _) in self.stats_after.items()
            if oid in after.relations and read > self.stats_before.get(oid, (0, 0, 0))[1]
        }
        concurrent_names = {n.lower() for n in concurrent} | set(concurrent)
        return Forecast(
            ms=self.ms,
            wal_bytes=wal_between(self.lsn_before, self.lsn_after),
            locks=sorted(
                (
                    RelationLock(
                        label(oid),
                        mode,
                        after.relations[oid][1],
                        rows.get(oid),
                        oid in new_oids,
                        oid in held_before,
                    )
                    for oid, mode in lock_modes.items()
                ),
                key=lambda lock: (-mode_rank(lock.mode), lock.relation),
            ),
            rewrites=[
                Rewrite(
                    label(oid), after.relations[oid][1], rows.get(oid), label(oid) in truncated_set
                )
                for oid in sorted(rewrites, key=label)
            ],
            indexes=[
                IndexBuild(
                    label(oid),
                    label(after.indexes[oid][0]),
                    rows.get(after.indexes[oid][0]),
                    concurrently=label(oid).rsplit(".", 1)[-1] in concurrent_names,
                    valid=valid,
                    rebuilt=rebuilt,
                    new_table=after.indexes[oid][0] in new_oids,
                )
                for oid, rebuilt, valid in sorted(indexes, key=lambda item: label(item[0]))
            ],
            constraints=[
                ConstraintChange(
                    constraint_name,
                    label(table_oid),
                    kind,
                    action,
                    valid,
                    rows.get(table_oid),
                    scanned.get(label(table_oid)) if self.transactional else None,
                    new_table=table_oid in new_oids,
                )
                for table_oid, constraint_name, kind, action, valid in sorted(
                    constraints, key=lambda c: (label(c[0]), c[1])
                )
            ],
            scanned=scanned,
            deltas=deltas,
            transaction=self.transactional,
            lock_ms=self.ms,
            sampled=not self.transactional,
            estimated=sorted(label(oid) for oid in estimated),
        )

    def _lock_modes(
        self,
        after: _Catalog,
        sampled: Mapping[int, set[str]] | None,
        reshaped: set[int],
    ) -> tuple[dict[int, str], set[int]]:
        """The strongest lock the body took per relation, and those held before it.

        In the rehearsal's one transaction an earlier artifact may hold a lock already: the
        body then takes it again without pg_locks showing a new row. What the body wrote or
        read (its own statistics) still says it took ROW EXCLUSIVE or ACCESS SHARE; a
        relation whose definition it changed is given the strongest mode held, at most.
        """
        relations = {
            oid
            for oid, (_, kind, _, _) in after.relations.items()
            if kind not in ("index", "partitioned index")
        }
        if not self.transactional:
            found = {oid: strongest(m) for oid, m in (sampled or {}).items() if m}
            return {oid: mode for oid, mode in found.items() if oid in relations}, set()
        modes: dict[int, str] = {}
        held_before: set[int] = set()
        for oid, held in self.locks_after.items():
            if oid not in relations:
                continue
            before = self.locks_before.get(oid, set())
            taken = held - before
            old = self.stats_before.get(oid, (0, 0, 0))
            new = self.stats_after.get(oid, old)
            if new[2] > old[2]:
                taken.add("RowExclusiveLock")
            elif new[0] > old[0]:
                taken.add("AccessShareLock")
            if oid in reshaped and before:
                prior = strongest(before)
                if not taken or mode_rank(strongest(taken)) < mode_rank(prior):
                    taken.add(prior)
                    held_before.add(oid)
            if taken:
                modes[oid] = strongest(taken)
        return modes, held_before

    def _rows(
        self, oids: Iterable[int], after: _Catalog, deltas: Counts
    ) -> tuple[dict[int, int], set[int]]:
        """Each named table's rows when the artifact began: counted after the body, less what
        it inserted, plus what it deleted; estimated from reltuples above `COUNT_LIMIT`."""
        rows: dict[int, int] = {}
        estimated: set[int] = set()
        for oid in sorted(oids):
            if oid not in after.relations:
                continue
            name, kind, _, tuples = after.relations[oid]
            if kind not in ("table", "partitioned table"):
                continue
            if tuples >= COUNT_LIMIT:
                rows[oid] = int(tuples)
                estimated.add(oid)
                continue
            statement = pgsql.SQL("select count(*) from {}").format(
                pgsql.Identifier(*name.split(".", 1))
            )
            now = int(self.session.scalar(statement.as_string(None)))
            delta = deltas.get(name, {})
            rows[oid] = max(0, now - delta.get("inserted", 0) + delta.get("deleted", 0))
        return rows, estimated


def observe_start(session: Session) -> tuple[float, str]:
    """At apply: the clock and the WAL position before the body."""
    return time.perf_counter(), wal_position(session)


def observe_end(session: Session, start: tuple[float, str]) -> dict[str, Any]:
    """At apply: the body's duration and the WAL written meanwhile (by every session)."""
    ms = (time.perf_counter() - start[0]) * 1000
    return {"ms": round(ms, 3), "wal_bytes": wal_between(start[1], wal_position(session))}
