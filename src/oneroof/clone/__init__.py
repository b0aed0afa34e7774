"""The clone: an isolated non-production copy of production, name-guarded, reset in seconds.

`create` copies production into a database on the non-production server — with `pg_dump
--snapshot` from the very snapshot the source fingerprint reads (method `dump`), or with
`CREATE DATABASE … TEMPLATE` on the production server itself (method `template`) — isolates
it, keeps a connection-less golden copy beside it, and writes the clone marker. `verify`
proves the isolation and that the committed state is still the one copied. `reset` rebuilds
the clone from the golden copy without touching production; `drop` removes both; `list`
shows every marked database of the server.

The marker is JSON under `connect.MARKER_KEY` in `COMMENT ON DATABASE`. It is written twice:
`state: "creating"` right after the database exists, and `state: "ready"` only once the copy,
the isolation and the golden copy succeeded, so a crash never leaves a clone that `verify`
accepts; the next `create` (or `reset`) recognises the interrupted one and rebuilds it. A
database of the chosen name without any marker is not ours and is refused — except one this
workspace's evidence journal shows we were creating when we were interrupted (the moment
between `CREATE DATABASE` and the first `COMMENT`).

The golden copy of clone `<name>` is `<name>_golden`; when that would exceed PostgreSQL's 63
bytes, `<first 47 bytes of name>_<8 hex of sha256(name)>_golden` (see `golden_name`). It is a
template that accepts no connections and carries its own marker (`role: "golden"`).

Every production access goes through `connect.open_production` (guarded, audited); the
pg_dump command line is audited too. Every name reaching SQL is composed with
`psycopg.sql.Identifier`/`Literal`.

One submodule per concept: `marker` (naming, the marker, the journal, the results), `process`
(the pg_dump/pg_restore children), `creation` (`create`), `isolation` (`isolate`),
`lifecycle` (`reset`, `drop`, `list_clones`), `copying` (how a database is copied inside
the server: WAL_LOG, FILE_COPY, FILE_COPY by reflink), `engines` (clones an external engine
makes, `[clone] method = "command"`, and `adopt`) and `verification` (`verify`). Their
names differ from the functions they hold so that `clone.create` and the others stay the
functions.
"""

from __future__ import annotations

from oneroof.clone._common import Step
from oneroof.clone.copying import FILE_COPY_BYTES, CopyMethod, Reflinks
from oneroof.clone.creation import DUMP_APP, READ_ONLY_OPTION, RESTORE_APP, create
from oneroof.clone.engines import adopt
from oneroof.clone.isolation import isolate
from oneroof.clone.lifecycle import drop, list_clones, reset
from oneroof.clone.marker import (
    CREATING,
    GOLDEN_SUFFIX,
    JOURNAL,
    MARKER_VERSION,
    READY,
    ROLE_CLONE,
    ROLE_GOLDEN,
    CloneEntry,
    CloneInfo,
    CloneVerification,
    DropResult,
    Point,
    _journal,
    _write_marker,
    golden_name,
    parse_marker,
    read_marker,
)
from oneroof.clone.verification import entry_fingerprint, source_fingerprint, verify

__all__ = [
    "CREATING",
    "DUMP_APP",
    "FILE_COPY_BYTES",
    "GOLDEN_SUFFIX",
    "JOURNAL",
    "MARKER_VERSION",
    "READY",
    "READ_ONLY_OPTION",
    "RESTORE_APP",
    "ROLE_CLONE",
    "ROLE_GOLDEN",
    "CloneEntry",
    "CloneInfo",
    "CloneVerification",
    "CopyMethod",
    "DropResult",
    "Point",
    "Reflinks",
    "Step",
    "_journal",
    "_write_marker",
    "adopt",
    "create",
    "drop",
    "entry_fingerprint",
    "golden_name",
    "isolate",
    "list_clones",
    "parse_marker",
    "read_marker",
    "reset",
    "source_fingerprint",
    "verify",
]
