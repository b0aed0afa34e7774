"""Artifact files and plan folders: parsing their headers and SQL bodies, refusing bad input."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast

from oneroof import gates, guard, sqltext
from oneroof.config import Config
from oneroof.errors import BadInput
from oneroof.gates import Gate
from oneroof.sqltext import Statement, strip_comment, value_text

HEADER_KEYS = ("artifact", "gate", "expect-delta", "stop", "auto", "requires", "transaction")
KINDS = ("inserted", "updated", "deleted")
SIGNS = {"+": "inserted", "~": "updated", "-": "deleted"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_DIRECTIVE = re.compile(r"^\s*--\s*([a-z][a-z0-9_-]*)\s*:(.*)$")
_IDENT_PART = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_DELTA = re.compile(
    rf"^(?P<table>{_IDENT_PART}\.{_IDENT_PART})\s+(?P<sign>[+~-])\s*"
    r"(?P<amount>\d+|[A-Za-z_][A-Za-z0-9_]*)$"
)

Counts = dict[str, dict[str, int]]
ALL_ROWS = -1  # `-all`: every row the table held when the artifact's transaction began


@dataclass(frozen=True)
class ExpectedDelta:
    """`-- expect-delta: schema.table +N`: N rows inserted (~ updated, - deleted), exactly."""

    table: str
    kind: str
    amount: int | str  # an integer literal or a counter name
    line: int

    @property
    def text(self) -> str:
        sign = next(s for s, k in SIGNS.items() if k == self.kind)
        amount = "all" if self.amount == ALL_ROWS else self.amount
        return f"{self.table} {sign}{amount}"


@dataclass(frozen=True)
class Artifact:
    """One parsed artifact file."""

    id: str
    file: Path
    checksum: str
    gates: tuple[Gate, ...]
    deltas: tuple[ExpectedDelta, ...]
    stops: tuple[Gate, ...]
    auto: bool
    requires: tuple[str, ...]
    statements: tuple[Statement, ...]
    text: str = field(repr=False, default="")
    # False for `-- transaction: none`: each statement runs on its own, in no transaction
    transactional: bool = True

    @property
    def gate_names(self) -> set[str]:
        return {name for gate in self.gates for name in gate.names}

    @property
    def stop_names(self) -> set[str]:
        return {name for gate in self.stops for name in gate.names}

    @property
    def delta_names(self) -> set[str]:
        return {d.amount for d in self.deltas if isinstance(d.amount, str)}

    @property
    def tables(self) -> list[str]:
        """The tables the artifact declares deltas for."""
        return sorted({d.table for d in self.deltas})

    def expected(self, values: Mapping[str, Any]) -> tuple[Counts, list[str]]:
        """The exact deltas declared, with counters resolved from `values`; and problems."""
        result: Counts = {}
        problems: list[str] = []
        for delta in self.deltas:
            amount: Any = delta.amount
            if isinstance(amount, str):
                value = values.get(amount)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    problems.append(
                        f"expect-delta {delta.text}: {amount} = {value_text(value)} is not a "
                        "row count"
                    )
                    continue
                amount = value
            result.setdefault(delta.table, dict.fromkeys(KINDS, 0))[delta.kind] = int(amount)
        return result, problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file": str(self.file),
            "checksum": self.checksum,
            "gates": [g.text for g in self.gates],
            "expect_delta": [d.text for d in self.deltas],
            "stops": [s.text for s in self.stops],
            "auto": self.auto,
            "requires": list(self.requires),
            "statements": len(self.statements),
            "transaction": "one" if self.transactional else "none",
        }


@dataclass(frozen=True)
class Plan:
    """The artifacts of one plan folder, in file order."""

    name: str
    path: Path
    artifacts: tuple[Artifact, ...]

    @property
    def checksums(self) -> list[list[str]]:
        """[[id, checksum], …] in order: what a rehearsal must match."""
        return [[a.id, a.checksum] for a in self.artifacts]

    @property
    def auto_set(self) -> list[str]:
        """The post-gate auto-executable set, in order."""
        return [a.id for a in self.artifacts if a.auto]

    @property
    def verify_set(self) -> list[str]:
        """`auto: false` artifacts after the last auto one: run by `watch` when read-only."""
        last = max((i for i, a in enumerate(self.artifacts) if a.auto), default=None)
        if last is None:
            return []
        return [a.id for a in self.artifacts[last + 1 :] if not a.auto]

    def artifact(self, artifact_id: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.id == artifact_id:
                return artifact
        raise KeyError(artifact_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.name,
            "path": str(self.path),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "auto_set": self.auto_set,
            "verify_set": self.verify_set,
        }


def resolve_plan_dir(cfg: Config, path: str | Path) -> Path:
    """A plan folder as given, else relative to the workspace."""
    candidate = Path(path)
    if candidate.is_dir() or candidate.is_absolute():
        return candidate
    in_workspace = cfg.workspace / candidate
    return in_workspace if in_workspace.is_dir() else candidate


def load_plan(path: Path, cfg: Config) -> Plan:
    """Parse every artifact of a plan folder; `BadInput` (file and line) before anything runs."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(
            "not a plan folder (expected a directory of NN_name.sql artifacts)", file=path
        )
    name = path.resolve().name
    if not _ID.match(name):
        raise BadInput(
            f"plan folder name {name!r}: use letters, digits, '_', '.', '-' only", file=path
        )
    files = sorted(p for p in path.iterdir() if p.suffix == ".sql" and p.is_file())
    if not files:
        raise BadInput("the plan folder holds no .sql artifact", file=path)
    known = set(cfg.counters)
    artifacts: list[Artifact] = []
    seen: dict[str, Path] = {}
    for file in files:
        artifact = parse_artifact(file, known)
        if artifact.id in seen:
            raise BadInput(
                f"duplicate artifact id {artifact.id!r} (also in {seen[artifact.id].name})",
                file=file,
                line=_line_of_key(artifact.text, "artifact"),
            )
        for required in artifact.requires:
            if required not in seen:
                later = any(required == a for a in _ids_after(files, file, known))
                why = "comes later in the plan" if later else "is not an artifact of this plan"
                raise BadInput(
                    f"requires {required!r}, which {why}",
                    file=file,
                    line=_line_of_key(artifact.text, "requires"),
                )
        seen[artifact.id] = file
        artifacts.append(artifact)
    return Plan(name, path, tuple(artifacts))


def _ids_after(files: list[Path], current: Path, known: set[str]) -> Iterator[str]:
    for file in files[files.index(current) + 1 :]:
        with contextlib.suppress(BadInput):
            yield parse_artifact(file, known).id


def _line_of_key(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        match = _DIRECTIVE.match(line)
        if match and match.group(1) == key:
            return number
    return None


def _parse_table(text: str) -> str:
    parts = re.findall(_IDENT_PART, text)
    names = [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in parts]
    return ".".join(names)


def parse_artifact(file: Path, counters: Iterable[str]) -> Artifact:
    """Parse one artifact file (header and body); `BadInput` naming file and line."""
    known = set(counters)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})", file=file) from None
    checksum = hashlib.sha256(raw).hexdigest()
    lines = text.splitlines()
    header_end = 0
    while header_end < len(lines):
        stripped = lines[header_end].strip()
        if stripped and not stripped.startswith("--"):
            break
        header_end += 1

    artifact_id: str | None = None
    auto: bool | None = None
    transactional: bool | None = None
    gate_list: list[Gate] = []
    stops: list[Gate] = []
    deltas: list[ExpectedDelta] = []
    requires: list[str] = []
    declared: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines[:header_end], start=1):
        match = _DIRECTIVE.match(line)
        if match is None:
            continue
        key, value = match.group(1), strip_comment(match.group(2))
        if key not in HEADER_KEYS:
            close = difflib.get_close_matches(key, HEADER_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}:`? " if close else ""
            raise BadInput(
                f"unknown header key {key!r} ({hint}known: {', '.join(HEADER_KEYS)}); a "
                "free-text comment must not start with a lower-case `word:`",
                file=file,
                line=number,
            )
        if not value:
            raise BadInput(f"header {key!r} has no value", file=file, line=number)
        if key == "artifact":
            if artifact_id is not None:
                raise BadInput("a second `artifact:` line", file=file, line=number)
            if not _ID.match(value):
                raise BadInput(
                    f"artifact id {value!r}: use letters, digits, '_', '.', '-' only",
                    file=file,
                    line=number,
                )
            artifact_id = value
        elif key == "gate":
            gate_list.append(gates.parse(value, file=file, line=number, known=known))
        elif key == "stop":
            stops.append(gates.parse(value, file=file, line=number, known=known))
        elif key == "auto":
            if auto is not None:
                raise BadInput("a second `auto:` line", file=file, line=number)
            if value.lower() not in ("true", "false"):
                raise BadInput(f"auto must be true or false, not {value!r}", file=file, line=number)
            auto = value.lower() == "true"
        elif key == "transaction":
            if transactional is not None:
                raise BadInput("a second `transaction:` line", file=file, line=number)
            if value.lower() != "none":
                raise BadInput(
                    f"transaction: {value!r}: the only value is `none` (an artifact runs in one "
                    "transaction unless it says `-- transaction: none`)",
                    file=file,
                    line=number,
                )
            transactional = False
        elif key == "requires":
            for required in re.split(r"[\s,]+", value):
                if not _ID.match(required):
                    raise BadInput(
                        f"requires: {required!r} is not an artifact id", file=file, line=number
                    )
                requires.append(required)
        else:
            deltas.append(_parse_delta(value, known, file, number, declared))

    for number, line in enumerate(lines[header_end:], start=header_end + 1):
        match = _DIRECTIVE.match(line)
        if match and match.group(1) in HEADER_KEYS:
            raise BadInput(
                f"header `{match.group(1)}:` after the SQL began: move it to the header at the "
                "top of the file",
                file=file,
                line=number,
            )
    if artifact_id is None:
        raise BadInput("missing `-- artifact: ID` header line", file=file, line=1)
    if not gate_list:
        raise BadInput(
            "missing `-- gate: EXPR` header line (every artifact is gated; write "
            "`-- gate: true` for one that is always open)",
            file=file,
            line=1,
        )
    statements = _split(text, file)
    if not statements:
        raise BadInput("the artifact has no SQL statement", file=file, line=header_end + 1)
    for statement in statements:
        verdict = guard.classify(statement.sql)
        if verdict.kind in (guard.Kind.TRANSACTION, guard.Kind.UNPARSEABLE, guard.Kind.MULTI):
            raise BadInput(
                f"not allowed in an artifact: {verdict.reason} (oneroof runs each artifact in "
                "its own transaction)",
                file=file,
                line=statement.line,
            )
        if _session_setting(statement.sql):
            raise BadInput(
                "SET/RESET without LOCAL would outlive the artifact's transaction: write SET LOCAL",
                file=file,
                line=statement.line,
            )
    if transactional is False:
        _check_standalone(text, file, deltas, stops, statements)
    else:
        for statement in statements:
            outside = needs_no_transaction(statement.sql)
            if outside:
                raise BadInput(
                    f"{outside} cannot run inside the artifact's transaction: put it in an "
                    "artifact of its own with the header line `-- transaction: none`",
                    file=file,
                    line=statement.line,
                )
    return Artifact(
        id=artifact_id,
        file=file,
        checksum=checksum,
        gates=tuple(gate_list),
        deltas=tuple(deltas),
        stops=tuple(stops),
        auto=bool(auto),
        requires=tuple(dict.fromkeys(requires)),
        statements=tuple(statements),
        text=text,
        transactional=transactional is not False,
    )


def _parsed(statement: str) -> Any:
    try:
        return pglast.parse_sql(statement)[0].stmt
    except Exception:  # unparseable statements were refused before
        return None


def needs_no_transaction(statement: str) -> str | None:
    """The name of a statement PostgreSQL runs only outside a transaction block, else None."""
    node = _parsed(statement)
    if isinstance(node, pglast.ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, pglast.ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, pglast.ast.ReindexStmt):
        options = {str(option.defname) for option in node.params or ()}
        if "concurrently" in options:
            return "REINDEX CONCURRENTLY"
        kind = pglast.enums.ReindexObjectType
        if node.kind in (kind.REINDEX_OBJECT_SYSTEM, kind.REINDEX_OBJECT_DATABASE):
            return "REINDEX SYSTEM/DATABASE"
    if isinstance(node, pglast.ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    if isinstance(node, pglast.ast.AlterTableStmt):
        for command in node.cmds or ():
            partition = getattr(command, "def_", None)
            if isinstance(partition, pglast.ast.PartitionCmd) and partition.concurrent:
                return "DETACH PARTITION CONCURRENTLY"
    return None


def _standalone_kind(node: Any) -> bool:
    """Statements that change no row: what a `transaction: none` artifact may hold."""
    if isinstance(node, pglast.ast.DropStmt):
        return bool(node.removeType == pglast.enums.ObjectType.OBJECT_INDEX)
    if isinstance(node, pglast.ast.AlterTableStmt):
        return all(
            isinstance(getattr(c, "def_", None), pglast.ast.PartitionCmd)
            and c.subtype == pglast.enums.AlterTableType.AT_DetachPartition
            for c in node.cmds or ()
        )
    return isinstance(node, pglast.ast.IndexStmt | pglast.ast.ReindexStmt | pglast.ast.VacuumStmt)


def _check_standalone(
    text: str,
    file: Path,
    deltas: list[ExpectedDelta],
    stops: list[Gate],
    statements: list[Statement],
) -> None:
    """A `transaction: none` artifact: statements that change no row, nothing to hold back."""
    for key, present in (("expect-delta", bool(deltas)), ("stop", bool(stops))):
        if present:
            raise BadInput(
                f"`{key}:` in a `transaction: none` artifact: its statements commit one by one "
                "and change no row, so nothing could be held back; drop the line, or move the "
                "statements that change rows to a transactional artifact",
                file=file,
                line=_line_of_key(text, key),
            )
    for statement in statements:
        node = _parsed(statement.sql)
        if not _standalone_kind(node):
            raise BadInput(
                f"not allowed in a `transaction: none` artifact: {type(node).__name__} would "
                "commit on its own without its deltas checked; it holds only CREATE INDEX "
                "[CONCURRENTLY], DROP INDEX [CONCURRENTLY], REINDEX, VACUUM, ANALYZE and DETACH "
                "PARTITION … CONCURRENTLY — move this statement to a transactional artifact",
                file=file,
                line=statement.line,
            )
        if isinstance(node, pglast.ast.IndexStmt) and not node.idxname:
            raise BadInput(
                "name the index (CREATE INDEX CONCURRENTLY name ON …): a rerun finds the one a "
                "killed attempt left invalid by its name",
                file=file,
                line=statement.line,
            )


def _session_setting(statement: str) -> bool:
    """True for a SET or RESET that is not LOCAL to the transaction."""
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except Exception:  # unparseable statements were refused before
        return False
    return isinstance(node, pglast.ast.VariableSetStmt) and not node.is_local


def _parse_delta(
    value: str, known: set[str], file: Path, line: int, declared: dict[tuple[str, str], int]
) -> ExpectedDelta:
    match = _DELTA.match(value)
    if match is None:
        raise BadInput(
            f"expect-delta {value!r}: write `schema.table +N` (+ inserted, ~ updated, "
            "- deleted; N an integer, a counter name, or -all)",
            file=file,
            line=line,
        )
    table = _parse_table(match.group("table"))
    kind = SIGNS[match.group("sign")]
    raw_amount = match.group("amount")
    amount: int | str = int(raw_amount) if raw_amount.isdigit() else raw_amount
    if amount == "all":
        if kind != "deleted":
            raise BadInput(
                f"expect-delta {value!r}: `all` counts the rows a table held, which only "
                "deleting removes: write `schema.table -all` (TRUNCATE, a delete of all rows)",
                file=file,
                line=line,
            )
        amount = ALL_ROWS
    if isinstance(amount, str) and amount not in known:
        choices = ", ".join(sorted(known)) or "none defined"
        raise BadInput(
            f"expect-delta {value!r}: unknown counter {amount!r} (known counters: {choices})",
            file=file,
            line=line,
        )
    if (table, kind) in declared:
        raise BadInput(
            f"expect-delta: {table} {match.group('sign')} declared twice (first on line "
            f"{declared[(table, kind)]})",
            file=file,
            line=line,
        )
    declared[(table, kind)] = line
    return ExpectedDelta(table, kind, amount, line)


def _split(text: str, file: Path, first_line: int = 1) -> list[Statement]:
    try:
        return sqltext.split(text, first_line)
    except sqltext.SqlSyntaxError as exc:
        raise BadInput(
            f"the PostgreSQL parser cannot read it: {exc.message}", file=file, line=exc.line
        ) from None
