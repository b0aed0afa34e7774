"""The evidence store: an append-only, hash-chained SQLite file in the workspace.

It holds the audit log (every statement sent to or refused for production) and every other
piece of evidence a report is built from (fingerprints, check runs, rehearsals, applies).
Each record carries the hash of the one before it, and a head file beside the database
remembers the last record, so `verify()` finds an edited, deleted, reordered or inserted
record — including one cut off the end. It never lives inside production.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from oneroof.errors import BadInput, NotFound, UnusableStore

GENESIS = "0" * 64

_SCHEMA = """
create table if not exists records (
    seq integer primary key,
    at text not null,
    kind text not null,
    role text,
    classification text,
    outcome text,
    sql text,
    payload text not null,
    prev_hash text not null,
    hash text not null
);
create index if not exists records_kind on records(kind, seq);
"""


def storable(text: str) -> str:
    """`text` as valid UTF-8: bytes that are not (argv's surrogate escapes) shown as \\xNN."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no byte decoded to
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text


def canonical_json(value: Any) -> str:
    """The one JSON form that is hashed: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Record:
    """One record of the store."""

    seq: int
    at: str
    kind: str
    role: str | None
    classification: str | None
    outcome: str | None
    sql: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "role": self.role,
            "classification": self.classification,
            "outcome": self.outcome,
            "sql": self.sql,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _record_hash(
    seq: int,
    at: str,
    kind: str,
    role: str | None,
    classification: str | None,
    outcome: str | None,
    sql: str | None,
    payload: str,
    prev_hash: str,
) -> str:
    body = canonical_json([seq, at, kind, role, classification, outcome, sql, payload, prev_hash])
    return hashlib.sha256(body.encode()).hexdigest()


class Evidence:
    """The evidence store of one workspace (`.oneroof/evidence.sqlite`)."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        """Open (and create) the store; `read_only` opens an existing one and never writes."""
        self.path = Path(path)
        self.head_path = self.path.with_suffix(".head")
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only:
            if not self.path.exists():
                raise NotFound("no evidence store yet: nothing has run in this workspace")
            try:
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False
                )
                self._db.execute("select count(*) from records").fetchone()
            except sqlite3.DatabaseError as exc:
                raise UnusableStore(f"not a usable evidence store: {exc}", file=self.path) from None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("pragma journal_mode=wal")
            self._db.execute("pragma synchronous=normal")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UnusableStore(f"not a usable evidence store: {exc}", file=self.path) from None

    def close(self) -> None:
        self._db.close()

    def append(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        role: str | None = None,
        classification: str | None = None,
        outcome: str | None = None,
        sql: str | None = None,
    ) -> Record:
        """Append one record at the end of the chain and return it."""
        if self.read_only:
            raise BadInput("the evidence store was opened read-only", file=self.path)
        text = storable(canonical_json(payload or {}))
        sql = storable(sql) if sql is not None else None
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        with self._lock:
            # IMMEDIATE serialises appenders across processes: the chain never forks.
            self._db.execute("begin immediate")
            try:
                row = self._db.execute(
                    "select seq, hash from records order by seq desc limit 1"
                ).fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                digest = _record_hash(seq, at, kind, role, classification, outcome, sql, text, prev)
                self._db.execute(
                    "insert into records values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, at, kind, role, classification, outcome, sql, text, prev, digest),
                )
                self._write_head(seq, digest)
                self._db.execute("commit")
            except BaseException:
                self._db.execute("rollback")
                raise
        return Record(
            seq, at, kind, role, classification, outcome, sql, json.loads(text), prev, digest
        )

    def audit(self, role: str, classification: str, sql: str, outcome: str, **extra: Any) -> Record:
        """Record one statement sent to, or refused for, a guarded role."""
        return self.append(
            "audit", extra, role=role, classification=classification, outcome=outcome, sql=sql
        )

    def _write_head(self, seq: int, digest: str) -> None:
        temporary = self.head_path.with_suffix(".head.tmp")
        temporary.write_text(f"{seq} {digest}\n")
        os.replace(temporary, self.head_path)

    def _query(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(query, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise UnusableStore(f"not a usable evidence store: {exc}", file=self.path) from None

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> Iterator[Record]:
        rows = self._query(query, params)
        for row in rows:
            try:
                payload = json.loads(row[7])
            except json.JSONDecodeError:
                payload = {"unreadable": row[7]}
            yield Record(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], payload, row[8], row[9]
            )

    def records(self, kind: str | None = None, *, since: int = 0) -> list[Record]:
        """Records in chain order, optionally of one kind and after sequence number `since`."""
        if kind is None:
            return list(self._rows("select * from records where seq > ? order by seq", (since,)))
        return list(
            self._rows(
                "select * from records where kind = ? and seq > ? order by seq", (kind, since)
            )
        )

    def latest(self, kind: str) -> Record | None:
        """The newest record of `kind`, if any."""
        found = list(
            self._rows("select * from records where kind = ? order by seq desc limit 1", (kind,))
        )
        return found[0] if found else None

    def kinds(self) -> list[str]:
        """The kinds of record the store holds."""
        return sorted(str(row[0]) for row in self._query("select distinct kind from records"))

    def record(self, seq: int) -> Record | None:
        """The record with sequence number `seq`, if there is one."""
        found = list(self._rows("select * from records where seq = ?", (seq,)))
        return found[0] if found else None

    def page(
        self,
        kind: str,
        *,
        limit: int,
        newest_first: bool = True,
        before: int | None = None,
        after: int | None = None,
    ) -> list[Record]:
        """At most `limit` records of `kind` with `after` < seq < `before`, in the order asked.

        The bounds are exclusive sequence numbers, so the last seq of one page is the cursor
        of the next: records appended meanwhile never shift a page.
        """
        direction = "desc" if newest_first else "asc"
        return list(
            self._rows(
                "select * from records where kind = ? and seq > ? and seq < ? "
                f"order by seq {direction} limit ?",
                (kind, after or 0, before if before is not None else 2**63 - 1, limit),
            )
        )

    def last_seq(self) -> int:
        row = self._query("select max(seq) from records")[0]
        return int(row[0] or 0)

    def verify(self) -> list[str]:
        """Every break in the chain, each naming the record; empty when the chain is intact."""
        problems: list[str] = []
        rows = self._query("select * from records order by rowid")
        expected_seq = 1
        prev_hash = GENESIS
        previous_seq = 0
        for row in rows:
            seq, at, kind, role, classification, outcome, sql, payload, stored_prev, stored = row
            if seq < expected_seq:
                problems.append(f"record {seq}: out of order (after record {previous_seq})")
            elif seq > expected_seq:
                gone = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}–{seq - 1}"
                problems.append(f"record {gone}: deleted (the chain jumps to {seq})")
            if stored_prev != prev_hash:
                problems.append(
                    f"record {seq}: does not follow record {previous_seq} "
                    "(inserted, reordered, or the record before it was changed)"
                )
            actual = _record_hash(
                seq, at, kind, role, classification, outcome, sql, payload, stored_prev
            )
            if actual != stored:
                problems.append(f"record {seq}: edited (its content no longer matches its hash)")
            prev_hash = stored
            previous_seq = seq
            expected_seq = seq + 1
        head = self._read_head()
        if head is not None:
            head_seq, head_hash = head
            if head_seq > previous_seq:
                problems.append(
                    f"record {previous_seq + 1}–{head_seq}: deleted from the end of the chain"
                )
            elif head_seq == previous_seq and head_hash != prev_hash:
                problems.append(f"record {head_seq}: replaced (the head file holds another hash)")
        elif rows:
            problems.append("the head file is missing: records may have been cut off the end")
        return problems

    def _read_head(self) -> tuple[int, str] | None:
        try:
            seq, digest = self.head_path.read_text().split()
            return int(seq), digest
        except (FileNotFoundError, ValueError):
            return None
