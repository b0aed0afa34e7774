"""Forbidden-action compliance: each thing that must not happen, measured, and how.

The audit log and the fingerprints tell what oneroof sent to production and whether
production changed. What they cannot tell is read here: `production_facts` reads, through
the guard, the sessions on production that carry oneroof's name or role and the statement
timeout every guarded session runs under; `clone_facts` reads on the non-production server
the sessions on the clone that listen, notify or reach out (dblink, postgres_fdw), app-role
sessions, user mappings and subscriptions. `lines` decides every category from those facts,
the audit records, the fingerprints and the residue proofs: a pure function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pglast
from pglast import ast

from oneroof import fingerprint
from oneroof.config import Config
from oneroof.evidence import Record
from oneroof.guard import walk
from oneroof.report import ComplianceLine

if TYPE_CHECKING:
    from oneroof.measurements import Measurements
    from oneroof.workspace import Workspace

# the categories measured on the clone (the rest are production's)
ON_CLONE = frozenset({"notify", "outbound", "subscriptions", "dispatch", "retargeting", "islands"})
PRODUCTION_SESSIONS = (
    "select pid, usename::text, application_name::text, backend_type::text"
    " from pg_catalog.pg_stat_activity"
    " where pid <> pg_catalog.pg_backend_pid()"
    # by name, not by role: a person or a tool reading as the same role is not oneroof's
    " and application_name like 'oneroof%'"
    " order by pid"
)
CLONE_SESSIONS = (
    "select pid, usename::text, application_name::text, state::text, left(query, 300)"
    " from pg_catalog.pg_stat_activity"
    " where datname = %s and pid <> pg_catalog.pg_backend_pid()"
    " and backend_type = 'client backend' order by pid"
)
CLONE_SUBSCRIPTIONS = (
    "select s.subname::text, s.subenabled from pg_catalog.pg_subscription s"
    " join pg_catalog.pg_database d on d.oid = s.subdbid where d.datname = %s order by 1"
)
CLONE_MAPPINGS = (
    "select srvname::text, coalesce(usename::text, 'PUBLIC') from pg_catalog.pg_user_mappings"
    " order by 1, 2"
)
CLONE_FOREIGN_TABLES = (
    "select n.nspname::text, c.relname::text from pg_catalog.pg_foreign_table f"
    " join pg_catalog.pg_class c on c.oid = f.ftrelid"
    " join pg_catalog.pg_namespace n on n.oid = c.relnamespace order by 1, 2"
)
CLONE_EXTENSIONS = (
    "select extname::text from pg_catalog.pg_extension"
    " where extname in ('dblink', 'postgres_fdw') order by 1"
)

_NOTIFY = re.compile(r"^\s*(listen|notify|unlisten)\b|\bpg_notify\s*\(", re.IGNORECASE)
_OUTBOUND = re.compile(r"\b(dblink\w*|postgres_fdw_\w+)\s*\(", re.IGNORECASE)


def production_facts(ws: Workspace) -> dict[str, Any]:
    """Sessions on production with oneroof's name besides this one; the timeout."""
    with ws.production() as session:
        rows = session.execute(PRODUCTION_SESSIONS)
        timeout = session.setting("statement_timeout")
        user = session.privileges.user if session.privileges else None
    return {
        "other_sessions": [
            {"pid": int(pid), "user": who, "application": app, "backend": kind}
            for pid, who, app, kind in rows
        ],
        "statement_timeout": timeout,
        "reader": user,
    }


def clone_facts(ws: Workspace, name: str) -> dict[str, Any]:
    """What could reach out from the clone or into it, measured on the clone's server."""
    with ws.server() as server:
        raw = server.raw_for_clone
        sessions = raw.execute(CLONE_SESSIONS, (name,)).fetchall()
        subscriptions = raw.execute(CLONE_SUBSCRIPTIONS, (name,)).fetchall()
    with ws.clone(name) as clone:
        raw = clone.raw_for_clone
        mappings = raw.execute(CLONE_MAPPINGS).fetchall()
        foreign = raw.execute(CLONE_FOREIGN_TABLES).fetchall()
        extensions = raw.execute(CLONE_EXTENSIONS).fetchall()
    return {
        "sessions": [
            {"pid": int(pid), "user": who, "application": app, "state": state, "query": query}
            for pid, who, app, state, query in sessions
        ],
        "subscriptions": [{"name": n, "enabled": bool(on)} for n, on in subscriptions],
        "user_mappings": [f"{server_name} for {user}" for server_name, user in mappings],
        "foreign_tables": [f"{schema}.{table}" for schema, table in foreign],
        "extensions": [str(row[0]) for row in extensions],
    }


# -- what a statement wrote, read with the parser ----------------------------------------


@dataclass
class Written:
    """What one non-read statement of the audit log would have changed, by kind."""

    kinds: set[str] = field(default_factory=set)  # data | schema | sequences
    relations: set[str] = field(default_factory=set)  # as written: schema.table or table


_DATA_NODES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt, ast.TruncateStmt)
_SEQUENCE_NODES = (ast.CreateSeqStmt, ast.AlterSeqStmt)
_SEQUENCE_FUNCTIONS = {"nextval", "setval"}


def written(sql: str, classification: str | None) -> Written:
    """The kinds and relations of a statement the guard did not class as a read."""
    result = Written()
    try:
        statements = pglast.parse_sql(sql)
    except Exception:  # unparseable: the guard's classification is all there is
        statements = ()
    for raw in statements:
        node = raw.stmt
        for inner in walk(node):
            if isinstance(inner, ast.RangeVar) and inner.relname:
                result.relations.add(
                    f"{inner.schemaname}.{inner.relname}" if inner.schemaname else inner.relname
                )
            elif isinstance(inner, ast.FuncCall):
                names = [p.sval or "" for p in inner.funcname or () if isinstance(p, ast.String)]
                if names and names[-1].lower() in _SEQUENCE_FUNCTIONS:
                    result.kinds.add("sequences")
            elif isinstance(inner, ast.CopyStmt) and inner.is_from:
                result.kinds.add("data")
        if isinstance(node, _DATA_NODES):
            result.kinds.add("data")
        elif isinstance(node, _SEQUENCE_NODES):
            result.kinds.add("sequences")
    if classification == "write":
        result.kinds.add("data")
    elif classification == "ddl" and not result.kinds & {"sequences", "data"}:
        result.kinds.add("schema")
    return result


def _names(table: str, relations: Iterable[str]) -> bool:
    bare = table.split(".", 1)[1]
    return any(r in (table, bare) for r in relations)


# -- the lines ----------------------------------------------------------------------------


@dataclass
class _Statements:
    """The non-read statements of the run's production audit, parsed once."""

    records: list[tuple[Record, Written]]

    @classmethod
    def of(cls, audit: Sequence[Record]) -> _Statements:
        found = [
            (r, written(r.sql or "", r.classification))
            for r in audit
            if r.role == "production"
            and r.outcome in ("sent", "refused")
            and r.classification not in ("read", "internal")
        ]
        return cls(found)

    def of_kind(self, kind: str) -> tuple[list[Record], list[Record]]:
        """(sent, refused) records of that kind."""
        hits = [r for r, w in self.records if kind in w.kinds]
        return [r for r in hits if r.outcome == "sent"], [r for r in hits if r.outcome != "sent"]

    def naming(self, tables: Iterable[str]) -> tuple[list[Record], list[Record]]:
        wanted = list(tables)
        hits = [r for r, w in self.records if any(_names(t, w.relations) for t in wanted)]
        return [r for r in hits if r.outcome == "sent"], [r for r in hits if r.outcome != "sent"]


def _seqs(records: Iterable[Record]) -> list[int]:
    return [r.seq for r in records]


def _changed(entry: fingerprint.Fingerprint, exit_fp: fingerprint.Fingerprint) -> set[str]:
    return {
        d.key
        for d in fingerprint.diff(entry, exit_fp, sections=["counts", "content"])
        if d.section in ("counts", "content")
    }


def _attempts(sent: Sequence[Record], refused: Sequence[Record]) -> str:
    return f"{len(sent)} sent, {len(refused)} refused by the guard (audit log)"


def lines(cfg: Config, m: Measurements, *, others: str = "") -> list[ComplianceLine]:
    """Every forbidden-action category of the campaign, decided from its measurements.

    `others` names what other sessions changed on production during the run (attribution).
    """
    refs = m.refs
    prints = [s for s in (refs.entry, refs.exit) if s is not None]
    here = [refs.measurements] if refs.measurements is not None else []
    statements = _Statements.of(m.audit)
    proofs = [r for r in m.audit if r.payload.get("proof") and not r.payload.get("apply")]
    with_xid = [r for r in proofs if r.payload.get("xid") is not None]
    sent = [r for r in m.audit if r.role == "production" and r.outcome == "sent"]
    executed = [r for r, _ in statements.records if r.outcome == "sent"]
    refused = [r for r, _ in statements.records if r.outcome != "sent"]
    applied = [r for r in m.audit if r.outcome == "apply"]
    result = [
        ComplianceLine(
            "writes",
            "No production write of any kind by oneroof",
            not with_xid and not executed,
            f"{len(proofs)} production transactions of oneroof, "
            + (
                f"{len(with_xid)} assigned a transaction id (a write)"
                if with_xid
                else "none assigned a transaction id"
            )
            + " (the write proof that ends each); "
            f"{len(sent)} statements sent, {len(executed)} of them not a plain read; "
            f"{len(refused)} refused by the guard; {len(applied)} of gated applies",
            _seqs(with_xid or proofs) + _seqs(executed) + _seqs(refused),
        )
    ]
    changed = _changed(m.entry, m.exit)
    by_others = f"; changed by other sessions during the run: {others}" if others else ""
    data_sent, data_refused = statements.of_kind("data")
    tables = len(m.entry.sections.get("counts", {}))
    result.append(
        ComplianceLine(
            "data",
            "No production data write (INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE)",
            not data_sent,
            f"{_attempts(data_sent, data_refused)}; "
            + (
                f"counts and content of all {tables} tables equal at entry and exit"
                if not changed
                else f"{len(changed)} of {tables} tables differ at exit (not by oneroof: "
                "no transaction of oneroof was assigned an id)"
            )
            + by_others,
            prints + _seqs(data_sent) + _seqs(data_refused),
        )
    )
    schema_sent, schema_refused = statements.of_kind("schema")
    same_schema = m.entry.digests.get("schema") == m.exit.digests.get("schema")
    result.append(
        ComplianceLine(
            "schema",
            "No production schema change (DDL)",
            not schema_sent,
            f"{_attempts(schema_sent, schema_refused)}; the schema digest at exit "
            + ("equals the entry's" if same_schema else "differs from the entry's (not oneroof)"),
            prints + _seqs(schema_sent) + _seqs(schema_refused),
        )
    )
    seq_sent, seq_refused = statements.of_kind("sequences")
    sequences = m.entry.sections.get("sequences", {})
    moved = [k for k, v in sequences.items() if m.exit.sections.get("sequences", {}).get(k) != v]
    result.append(
        ComplianceLine(
            "sequences",
            "No production sequence change (nextval, setval, ALTER SEQUENCE)",
            not seq_sent,
            f"{_attempts(seq_sent, seq_refused)}; "
            + (
                f"all {len(sequences)} sequences equal at entry and exit"
                if not moved
                else f"{len(moved)} of {len(sequences)} sequences moved (by other sessions:"
                f" {', '.join(moved[:5])})"
            ),
            prints + _seqs(seq_sent) + _seqs(seq_refused),
        )
    )
    counts = m.entry.sections.get("counts", {})
    for group, group_tables in cfg.compliance.items():
        hit_sent, hit_refused = statements.naming(group_tables)
        missing = [t for t in group_tables if t not in counts]
        differ = [t for t in group_tables if t in changed]
        if missing:
            state = (
                f"not in production's fingerprint: {', '.join(missing)} (check [compliance] "
                f"{group} in {cfg.file.name})"
            )
        elif differ:
            state = (
                f"{', '.join(differ)} changed during the run, by other sessions (no "
                "transaction of oneroof was assigned an id)"
            )
        else:
            state = "its rows equal at entry and exit (fingerprint counts and content)"
        result.append(
            ComplianceLine(
                f"group:{group}",
                f"No {group} write ({', '.join(group_tables)})",
                not hit_sent and not missing,
                f"statements naming it that are not reads: {_attempts(hit_sent, hit_refused)}; "
                + state,
                prints + _seqs(hit_sent) + _seqs(hit_refused),
            )
        )
    result += _session_lines(cfg, m, here)
    result += _clone_lines(cfg, m, here)
    result.append(_scan_line(cfg, m, here + prints))
    result.append(_island_line(m))
    return result


def _not_measured(name: str, title: str, evidence: list[int]) -> ComplianceLine:
    return ComplianceLine(name, title, False, "not measured in this campaign", evidence)


def _session_lines(cfg: Config, m: Measurements, here: list[int]) -> list[ComplianceLine]:
    title = "No worker, scanner or backfill of oneroof on production"
    facts = m.compliance_production
    if "other_sessions" not in facts:
        return [_not_measured("sessions", title, here)]
    others = list(facts["other_sessions"])
    connects = [r for r in m.audit if r.sql == "-- connect"]
    shown = ", ".join(
        f"pid {s['pid']} ({s.get('user') or '?'}, {s.get('application') or 'no name'})"
        for s in others[:5]
    )
    return [
        ComplianceLine(
            "sessions",
            title,
            not others,
            f"oneroof opened {m.production_sessions} guarded session(s)"
            + (f" and {m.dump_sessions} of pg_dump" if m.dump_sessions else "")
            + " (audit log); at the end, other sessions on production named oneroof: "
            f"{len(others)} (pg_stat_activity)" + (f": {shown}" if others else ""),
            here + _seqs(connects),
        )
    ]


def _clone_lines(cfg: Config, m: Measurements, here: list[int]) -> list[ComplianceLine]:
    facts = m.compliance_clone
    where = f"measured on the clone {m.clone_name} (pg_stat_activity, catalogs)"
    titles = {
        "notify": "No notification from the clone (LISTEN/NOTIFY)",
        "outbound": "No outbound connection from the clone (dblink, postgres_fdw)",
        "subscriptions": "No replication to or from the clone (subscriptions)",
        "retargeting": "No application retargeted to the clone",
    }
    if "sessions" not in facts:
        return [_not_measured(name, title, here) for name, title in titles.items()] + [
            _dispatch_line(m, here)
        ]
    sessions = [
        s for s in facts["sessions"] if not str(s.get("application") or "").startswith("oneroof")
    ]
    app_roles = set(cfg.guard.app_roles)

    def described(found: list[Mapping[str, Any]]) -> str:
        return "; ".join(
            f"pid {s['pid']} ({s.get('user')}): {str(s.get('query') or '').strip()[:80]}"
            for s in found[:3]
        )

    listening = [s for s in sessions if _NOTIFY.search(str(s.get("query") or ""))]
    foreign = [t.split(".", 1)[1] for t in facts.get("foreign_tables", [])]
    reaching = [
        s
        for s in sessions
        if _OUTBOUND.search(str(s.get("query") or ""))
        or any(re.search(rf"\b{re.escape(t)}\b", str(s.get("query") or "")) for t in foreign)
    ]
    mappings = list(facts.get("user_mappings", []))
    enabled = [s["name"] for s in facts.get("subscriptions", []) if s.get("enabled")]
    apps = [s for s in sessions if s.get("user") in app_roles]
    connect = next((p for p in m.isolation_after.points if p.name == "connect_privilege"), None)
    installed = facts.get("extensions") or []
    return [
        ComplianceLine(
            "notify",
            titles["notify"],
            not listening,
            f"sessions whose last statement was LISTEN, NOTIFY or pg_notify: {len(listening)}"
            + (f" — {described(listening)}" if listening else "")
            + f"; {where}",
            here,
        ),
        ComplianceLine(
            "outbound",
            titles["outbound"],
            not reaching and not mappings,
            f"sessions calling dblink or postgres_fdw or reading a foreign table: {len(reaching)}"
            + (f" — {described(reaching)}" if reaching else "")
            + f"; user mappings (credentials of foreign servers): {len(mappings)}"
            + (f" ({', '.join(mappings)})" if mappings else "")
            + (f"; installed: {', '.join(installed)}" if installed else "")
            + f"; {where}",
            here,
        ),
        ComplianceLine(
            "subscriptions",
            titles["subscriptions"],
            not enabled,
            f"enabled subscriptions of the clone: {len(enabled)} of "
            f"{len(facts.get('subscriptions', []))}"
            + (f" ({', '.join(enabled)})" if enabled else "")
            + " (pg_subscription)",
            here,
        ),
        _dispatch_line(m, here),
        ComplianceLine(
            "retargeting",
            titles["retargeting"],
            not apps and (connect is None or connect.ok),
            f"sessions of app roles ({', '.join(sorted(app_roles)) or 'none configured'}) on "
            f"the clone: {len(apps)}"
            + (f" — {described(apps)}" if apps else "")
            + (f"; {connect.detail}" if connect is not None else "")
            + f"; {where}",
            here + m.refs.verifications[-1:],
        ),
    ]


def _dispatch_line(m: Measurements, here: list[int]) -> ComplianceLine:
    facts = m.isolation_facts
    disabled = int(facts.get("triggers_disabled", 0))
    configured = int(facts.get("triggers_configured", 0))
    leases = facts.get("leases")
    ok = disabled == configured and leases in (None, 0, False)
    return ComplianceLine(
        "dispatch",
        "No dispatch from the clone (emit triggers, worker leases)",
        ok,
        f"emit triggers disabled on the clone: {disabled} of {configured}"
        + (f"; worker leases on the clone: {leases}" if leases is not None else ""),
        here + m.refs.verifications[-1:],
    )


def timeout_ms(text: str | None) -> int | None:
    """A `SHOW statement_timeout` value in milliseconds (0: none); None when unreadable."""
    from oneroof.sqltext import setting_ms

    if text is None:
        return None
    if text.strip() in ("0", "0ms"):
        return 0
    try:
        return setting_ms(text)
    except ValueError:
        return None


_LOCAL = re.compile(r"^SET LOCAL statement_timeout = '(\d+)ms'$")


def _scan_line(cfg: Config, m: Measurements, evidence: list[int]) -> ComplianceLine:
    title = "No unbounded scan of production"
    setting = m.compliance_production.get("statement_timeout")
    if setting is None:
        return _not_measured("scans", title, evidence)
    session_ms = timeout_ms(str(setting))
    local = [int(match.group(1)) for r in m.audit if (match := _LOCAL.match(r.sql or ""))]
    ceiling = session_ms or 0
    raised = [ms for ms in local if ceiling and ms > ceiling]
    budget = cfg.production.scan_budget_rows
    scans = []
    within = True
    for label, taken in (("entry", m.entry), ("exit", m.exit)):
        rows = sum(int(v) for v in taken.sections.get("counts", {}).values() if isinstance(v, int))
        if taken.mode == "full":
            scans.append(f"{label} {rows} rows")
            within = within and rows <= budget
        else:
            scans.append(f"{label}: {taken.mode} only")
    skipped = [n for n in m.entry.notes if "scan budget" in n]
    ok = bool(session_ms) and not raised and within
    return ComplianceLine(
        "scans",
        title,
        ok,
        f"every guarded production statement under statement_timeout = {setting}"
        + (" (none: unbounded)" if session_ms == 0 else "")
        + f" (the session's setting at the end); statements raising it: {len(raised)}; "
        f"full content fingerprints ({', '.join(scans)}) "
        + ("within" if within else "ABOVE")
        + f" the scan budget of {budget} rows"
        + (f" ({skipped[0]})" if skipped else "")
        + (
            f"; pg_dump's {m.dump_sessions} session(s) read production once, in the entry "
            "snapshot, to make the clone"
            if m.dump_sessions
            else ""
        ),
        evidence,
    )


def _island_line(m: Measurements) -> ComplianceLine:
    proofs = [
        (r.residue_free, r.evidence_seq)
        for runs in m.suites.values()
        for r in runs
        if r.residue_free is not None
    ]
    proofs += [(r.residue_free, r.record) for r in m.rehearsals.values()]
    dirty = sum(1 for free, _ in proofs if not free)
    state = next((p for p in m.isolation_after.points if p.name == "committed_state"), None)
    ok = not dirty and (state is None or state.ok)
    return ComplianceLine(
        "islands",
        "No hidden island (residue left on the clone)",
        ok,
        f"{len(proofs)} residue proofs of rollback-only work (suites on the clone, "
        f"rehearsals): {len(proofs) - dirty} residue-free"
        + (f", {dirty} with RESIDUE" if dirty else "")
        + (f"; committed state: {state.detail}" if state is not None else ""),
        [s for _, s in proofs if s is not None] + m.refs.verifications[-1:],
    )
