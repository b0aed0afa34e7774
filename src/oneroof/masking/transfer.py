"""Reading masked rows on production, in the snapshot's transaction; writing them into the clone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from oneroof import connect, fingerprint
from oneroof.connect import CloneSession, ProductionSession
from oneroof.errors import BadInput, DatabaseError, pg_message
from oneroof.masking.expressions import as_text, export_query, load_statement
from oneroof.masking.planning import Plan, TablePlan


@dataclass
class Export:
    """The masked rows of each table, in files, and production's facts at the snapshot."""

    files: dict[str, list[Path]]
    encoding: str
    unmasked: dict[str, tuple[int, str]]  # count and digest over the columns left as they were


CHUNK_PAGES = 512  # 4 MB: a table of two or more is read in page ranges, side by side


def chunks(table: TablePlan, jobs: int, version: int) -> list[tuple[int, int | None] | None]:
    if jobs < 2 or version < 140000 or table.pages < 2 * CHUNK_PAGES:
        return [None]
    if any(m.rule.kind == "shuffle" for m in table.masked.values()):
        return [None]  # a shuffle permutes the whole column, in one statement
    count = min(jobs, table.pages // CHUNK_PAGES)
    step = -(-table.pages // count)
    edges = [i * step for i in range(count)]
    return [(lo, edges[i + 1] if i + 1 < count else None) for i, lo in enumerate(edges)]


class Exporter:
    """Reads every masked table, masked on production, into files, from the dump's snapshot.

    `start()` opens up to `jobs` more production sessions that import the snapshot and read
    side by side while the caller's session fingerprints (as pg_dump -j reads tables); large
    tables are read in page ranges. `finish()` waits for them — or, with no helper, reads
    everything in the caller's session — and takes production's digest of the columns
    masking keeps, in the caller's transaction.
    """

    def __init__(
        self,
        masking: Plan,
        key: str | None,
        directory: Path,
        say: Callable[[str], None] = lambda _m: None,
        *,
        version: int = 140000,
        jobs: int = 1,
    ) -> None:
        if masking.needs_key and key is None:
            raise BadInput("masking: no key")
        self.masking = masking
        self.key = key
        self.directory = directory
        self.say = say
        self.work: list[tuple[TablePlan, int, tuple[int, int | None] | None]] = []
        for table in masking.tables.values():
            for index, pages in enumerate(chunks(table, jobs, version)):
                self.work.append((table, index, pages))
        self.work.sort(key=lambda w: -w[0].pages)  # largest first: none starts last, alone
        self.jobs = jobs
        self.files: dict[str, list[Path]] = {key_: [] for key_ in masking.tables}
        self._lock = threading.Lock()
        self._helpers: list[ProductionSession] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []

    def _prepare(self, own: ProductionSession) -> None:
        for setting in connect.FORMAT_SETTINGS:
            own.internal(setting)
        if self.masking.needs_key:
            own.internal(connect.SET_MASK_KEY, (self.key,))
            held = own.scalar(
                "select pg_catalog.length(pg_catalog.current_setting('oneroof.mask_key'))"
            )
            if held != len(str(self.key)):
                raise DatabaseError("the masking key did not reach the production session")

    def _worker(self, own: ProductionSession) -> None:
        tables = list(self.masking.tables)
        while True:
            with self._lock:
                if not self.work:
                    return
                table, index, pages = self.work.pop(0)
            where = "" if pages is None else f", pages {pages[0]}…{pages[1] or 'end'}"
            self.say(f"masking {table.key} ({', '.join(table.masked)}{where}) on production")
            path = self.directory / f"t{tables.index(table.key)}-{index}.copy"
            with path.open("wb") as sink:
                for chunk in own.copy_out(as_text(export_query(table, pages))):
                    sink.write(chunk)
            with self._lock:
                self.files[table.key].append(path)

    def start(self, snapshot: str, open_helper: Callable[[], ProductionSession]) -> None:
        """Begin reading in helper sessions of the snapshot (none with `jobs` 1)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.jobs < 2:
            return
        try:
            for _ in range(min(self.jobs, len(self.work))):
                helper = open_helper()
                self._helpers.append(helper)
                fingerprint.helper_begin(helper, snapshot)
                self._prepare(helper)
        except BaseException:
            self._close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=len(self._helpers))
        self._futures = [self._pool.submit(self._worker, own) for own in self._helpers]

    def finish(self, session: ProductionSession, method: str = fingerprint.RECORD_HASH) -> Export:
        """Wait for the helpers (or read in `session`); digest what masking keeps."""
        if not session.in_transaction:
            raise BadInput("masking: the export runs inside the snapshot's transaction")
        try:
            self._prepare(session)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._worker(session)  # the caller's session takes what the helpers have not
            for future in self._futures:
                future.result()
        finally:
            self._close()
        for paths in self.files.values():
            paths.sort()
        unmasked = fingerprint.partial_content(
            session, {name: t.derived for name, t in self.masking.tables.items()}, method
        )
        return Export(self.files, session.setting("client_encoding"), unmasked)

    def abandon(self) -> None:
        """After a failure elsewhere: let the helpers end their statement, then close them."""
        with self._lock:
            self.work.clear()
        for future in self._futures:
            future.exception()
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        while self._helpers:
            self._helpers.pop().close()


def export(
    session: ProductionSession,
    masking: Plan,
    key: str | None,
    directory: Path,
    say: Callable[[str], None] = lambda _m: None,
    *,
    method: str = fingerprint.RECORD_HASH,
) -> Export:
    """Read every masked table in `session`'s open transaction (one session, no helper)."""
    return Exporter(masking, key, directory, say).finish(session, method)


def load(clone: CloneSession, masking: Plan, exported: Export) -> None:
    """Write the masked rows into the clone's tables (made by pg_restore's pre-data)."""
    raw = clone.raw_for_clone
    raw.execute("SET lc_monetary = 'C'")  # money was written under lc_monetary C
    for key, paths in exported.files.items():
        table = masking.tables[key]
        try:
            statement = as_text(load_statement(table, exported.encoding))
            for path in paths:
                with raw.cursor().copy(statement) as copy, path.open("rb") as source:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
        except psycopg.Error as exc:
            lines = [m.line for m in table.masked.values() if m.line is not None]
            rules = ", ".join(f"{c} = {m.rule}" for c, m in table.masked.items())
            raise BadInput(
                f"[masking] the masked rows of {key} ({rules}) do not fit the clone's table: "
                f"{pg_message(exc)}; change the rule",
                file=masking.file,
                line=min(lines) if lines else None,
            ) from None
