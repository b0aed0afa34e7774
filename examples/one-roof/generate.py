"""Deterministic generator of the One-Roof reference database.

``build(conn, objects=..., gap=..., seed=...)`` creates the schema from ``schema.sql`` (next to
this file) in an empty database and fills it from ``random.Random(seed)``: the same
arguments always give the same rows.  Exactly ``gap`` objects are left without an active
responsibility owner, so ``select count(*) from core.v_ownership_gap`` equals ``gap``.
Production is generated in its pre-ratification state: no approvals (``ospa = 0``), every
event type inactive, an empty outbox, no job leases and the dispatcher disabled.

``ratify(conn, signatures)`` plays the humans: it records the L2 quorum and the L4
President's signature on APR-BOOT-AUTHMODEL-1, after which ``ospa >= 1``; ``signatures``
are the Ed25519 signatures those humans made over the F plan (``oneroof demo --ratify``
makes their keys and signs with ``oneroof approve``); without them a stand-in token is
recorded, and the gate's ``approved`` stays closed until the plan itself is signed.

Both functions accept a psycopg 3 connection in autocommit mode or not.  Each does its work
inside ``conn.transaction()``: with no transaction open (always the case in autocommit
mode) the work is committed on return; if the caller already has a transaction open, the
work becomes a savepoint inside it and the caller decides whether to commit.

Command line::

    python examples/one-roof/generate.py --dsn postgresql://... \
        [--objects 1000 --gap 210 --seed 1] [--ratify]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

SCHEMA_SQL = Path(__file__).resolve().parent / "schema.sql"

BOOT_PROPOSAL = "APR-BOOT-AUTHMODEL-1"
L2_QUORUM = 2

OBJECT_KINDS = ("process", "dataset", "system", "document", "service")
ISSUE_KINDS = ("ownership_gap", "data_quality", "access", "incident")
# fmt: off
FIRST_NAMES = (
    "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Kaori", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tala",
)
LAST_NAMES = (
    "Almeida", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Sato",
)
# fmt: on

# Fixed reference data (identical for every seed).
EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 86_400

PROPOSALS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    (
        BOOT_PROPOSAL,
        "Bootstrap the authority model: L2 quorum and L4 President signature open the "
        "production ownership seed",
        "L4",
        "pending",
        {
            "requires": {"l2_quorum": L2_QUORUM, "l4_signature": True},
            "opens": [
                "F_prod_00_preflight",
                "F_prod_01_materialize_candidates",
                "F_prod_02_activate",
                "F_prod_03_verify",
            ],
        },
    ),
    (
        "APR-AXIS-OWNERSHIP-1",
        "Ownership axis extension: persistent axis substrate and a first topic axis",
        "L4",
        "pending",
        {
            "requires": {"l2_quorum": L2_QUORUM, "l4_signature": True},
            "adds": ["core.axes", "core.axis_ownership"],
        },
    ),
    (
        "APR-EMIT-ACTIVATE-1",
        "Activate issue events together with an outside dispatcher",
        "L3",
        "draft",
        {"activates": ["issue.opened", "issue.closed"], "dispatcher": "outside"},
    ),
    (
        "APR-DOT-RUNNER-1",
        "Commission a DOT runner outside the database",
        "L3",
        "draft",
        {"runner": "outside", "never_on": ["production-database"]},
    ),
    (
        "APR-LEGACY-AUTH-0",
        "Legacy single-signature authority model",
        "L2",
        "withdrawn",
        {"superseded_by": BOOT_PROPOSAL},
    ),
)

# (code, [(version, status), ...]) -- at most one active version per code
LAWS: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    ("LAW-CHARTER", ((1, "retired"), (2, "active"))),
    ("LAW-OWNERSHIP", ((1, "active"), (2, "draft"))),
    ("LAW-EVENTS", ((1, "draft"),)),
    ("LAW-DOT", ((1, "retired"), (2, "active"), (3, "draft"))),
)

EVENT_TYPES = (
    ("issue.opened", "an issue was opened on an object"),
    ("issue.closed", "an issue was closed"),
    ("ownership.changed", "a responsibility owner changed"),
    ("proposal.approved", "a proposal received an approval"),
    ("law.activated", "a law version became active"),
    ("dot.registered", "a DOT was registered"),
)

DOTS = (
    ("DOT-OWNERSHIP-SEED", "runner.ownership:seed", "registered", 30),
    ("DOT-GAP-SCAN", "runner.ownership:scan_gap", "registered", 45),
    ("DOT-LAW-PUBLISH", "runner.laws:publish", "registered", 90),
    ("DOT-EVENT-DISPATCH", "runner.events:dispatch", "registered", 120),
    ("DOT-LEGACY-IMPORT", "runner.legacy:import", "retired", 5),
)


def _validate(objects: int, gap: int, seed: int) -> None:
    for name, value in (("objects", objects), ("gap", gap), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if objects < 1:
        raise ValueError(f"objects must be >= 1, got {objects}")
    if not 0 <= gap <= objects:
        raise ValueError(f"gap must be between 0 and objects ({objects}), got {gap}")


def _assert_empty(cur: psycopg.Cursor[Any]) -> None:
    cur.execute(
        "select string_agg(nspname, ', ' order by nspname) from pg_namespace "
        "where nspname in ('core', 'gov', 'ops', 'api')"
    )
    present = cur.fetchone()[0]  # type: ignore[index]
    if present:
        raise ValueError(f"the database is not empty: schema(s) {present} already exist")


def _actors(rng: random.Random, n: int) -> list[tuple[int, str, str, bool]]:
    """Actor 1 is the President (the only active L4); 2 is a former President; 3-5 are
    active L2 actors so that an L2 quorum always exists."""
    rows: list[tuple[int, str, str, bool]] = [
        (1, "President " + rng.choice(LAST_NAMES), "L4", True),
        (2, "Former President " + rng.choice(LAST_NAMES), "L4", False),
    ]
    for actor_id in range(3, n + 1):
        if actor_id <= 5:
            level, active = "L2", True
        else:
            level = rng.choices(("L1", "L2", "L3"), weights=(55, 25, 20))[0]
            active = rng.random() < 0.9
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        rows.append((actor_id, name, level, active))
    return rows


def _copy(
    cur: psycopg.Cursor[Any],
    table: tuple[str, str],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """COPY ``rows`` into ``table`` (schema, name)."""
    statement = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(*table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(statement) as cp:
        for row in rows:
            cp.write_row(row)


def build(
    conn: psycopg.Connection[Any], *, objects: int = 1000, gap: int = 210, seed: int = 1
) -> dict[str, Any]:
    """Create the schema and generate the production database; return its figures."""
    _validate(objects, gap, seed)
    rng = random.Random(seed)
    schema = SCHEMA_SQL.read_text(encoding="utf-8")

    n_actors = min(5000, 12 + objects // 25)
    actors = _actors(rng, n_actors)
    all_ids = [a[0] for a in actors]
    active_ids = [a[0] for a in actors if a[3]]

    object_rows: list[tuple[int, str, str, datetime, int]] = []
    for object_id in range(1, objects + 1):
        kind = rng.choice(OBJECT_KINDS)
        created_at = EPOCH + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        object_rows.append(
            (object_id, kind, f"{kind}-{object_id:06d}", created_at, rng.choice(all_ids))
        )

    gap_ids = set(rng.sample(range(1, objects + 1), gap))
    ownership_rows: list[tuple[int, int, int, str, str, datetime]] = []
    for object_id, _kind, _name, created_at, _by in object_rows:
        since = created_at + timedelta(days=rng.randint(1, 30))
        if rng.random() < 0.15:  # an earlier owner who handed the object over
            ownership_rows.append(
                (
                    len(ownership_rows) + 1,
                    object_id,
                    rng.choice(all_ids),
                    "responsibility",
                    "retired",
                    since,
                )
            )
            since += timedelta(days=rng.randint(1, 200))
        if object_id not in gap_ids:
            ownership_rows.append(
                (
                    len(ownership_rows) + 1,
                    object_id,
                    rng.choice(active_ids),
                    "responsibility",
                    "active",
                    since,
                )
            )

    n_issues = max(1, objects // 25)
    issue_rows: list[tuple[int, int, str, str, datetime]] = []
    for issue_id in range(1, n_issues + 1):
        object_id = rng.randint(1, objects)
        opened_at = object_rows[object_id - 1][3] + timedelta(hours=rng.randint(1, 24 * 300))
        issue_rows.append(
            (
                issue_id,
                object_id,
                rng.choice(ISSUE_KINDS),
                "open" if rng.random() < 0.7 else "closed",
                opened_at,
            )
        )

    with conn.transaction(), conn.cursor() as cur:
        _assert_empty(cur)
        cur.execute(schema)

        _copy(cur, ("core", "actors"), ("id", "name", "level", "active"), actors)
        _copy(
            cur,
            ("core", "objects"),
            ("id", "kind", "name", "created_at", "created_by"),
            object_rows,
        )
        _copy(
            cur,
            ("core", "ownership"),
            ("id", "object_id", "actor_id", "role", "status", "since"),
            ownership_rows,
        )

        cur.executemany(
            "insert into gov.os_proposals (code, title, level_required, status, payload, "
            "payload_sha256) values (%(code)s, %(title)s, %(level)s, %(status)s, %(payload)s, "
            "encode(sha256(convert_to((%(payload)s::jsonb)::text, 'UTF8')), 'hex'))",
            [
                {
                    "code": code,
                    "title": title,
                    "level": level,
                    "status": status,
                    "payload": Jsonb({"code": code, "title": title, **payload}),
                }
                for code, title, level, status, payload in PROPOSALS
            ],
        )
        cur.executemany(
            "insert into gov.laws (code, version, status, body) values (%s, %s, %s, %s)",
            [
                (code, version, status, f"{code} version {version}: text of the law ({status}).")
                for code, versions in LAWS
                for version, status in versions
            ],
        )

        cur.executemany(
            "insert into ops.event_type_registry (code, active, description) "
            "values (%s, false, %s)",
            EVENT_TYPES,
        )
        cur.execute("insert into ops.dispatch_settings (singleton, enabled) values (true, false)")
        # every event type is inactive, so the emit trigger writes nothing to the outbox
        _copy(
            cur, ("ops", "issues"), ("id", "object_id", "kind", "status", "opened_at"), issue_rows
        )
        # the birth_dot_registration trigger writes one ops.birth_registry row per DOT
        cur.executemany(
            "insert into ops.dot_registry (code, handler, status, registered_at) "
            "values (%s, %s, %s, %s)",
            [
                (code, handler, status, EPOCH + timedelta(days=day))
                for code, handler, status, day in DOTS
            ],
        )

        # rows were copied with explicit ids: move the identity sequences past them
        for schema_name, table in (
            ("core", "actors"),
            ("core", "objects"),
            ("core", "ownership"),
            ("ops", "issues"),
        ):
            cur.execute(
                sql.SQL(
                    "select setval(pg_get_serial_sequence(%s, 'id'), (select max(id) from {}))"
                ).format(sql.Identifier(schema_name, table)),
                (f"{schema_name}.{table}",),
            )
        return _figures(cur, seed)


def _figures(cur: psycopg.Cursor[Any], seed: int) -> dict[str, Any]:
    cur.execute(
        """
        select
          (select count(*) from core.objects),
          (select count(*) from core.v_ownership_gap),
          (select count(*) from core.actors),
          (select count(*) from core.actors where active),
          (select count(*) from core.actors where level = 'L2' and active),
          (select min(id) from core.actors where level = 'L4' and active),
          (select count(*) from core.ownership),
          (select count(*) from core.ownership where status = 'active'),
          (select count(*) from core.ownership where status = 'retired'),
          (select count(*) from gov.os_proposals),
          (select count(*) from gov.os_proposal_approvals),
          (select count(*) from gov.laws),
          (select count(distinct code) from gov.laws),
          (select count(*) from ops.event_type_registry),
          (select count(*) from ops.event_type_registry where active),
          (select count(*) from ops.issues),
          (select count(*) from ops.events),
          (select count(*) from ops.dot_registry),
          (select count(*) from ops.birth_registry),
          (select count(*) from ops.job_leases)
        """
    )
    keys = (
        "objects",
        "gap",
        "actors",
        "active_actors",
        "active_l2_actors",
        "president_id",
        "ownership_rows",
        "active_owners",
        "retired_ownership_rows",
        "proposals",
        "approvals",
        "law_versions",
        "laws",
        "event_types",
        "active_event_types",
        "issues",
        "events",
        "dots",
        "births",
        "job_leases",
    )
    row = cur.fetchone()
    assert row is not None
    figures = dict(zip(keys, row, strict=True))
    figures["owned"] = figures["objects"] - figures["gap"]
    figures["seed"] = seed
    return figures


def _signature(payload_sha256: str, proposal_code: str, actor_id: int, level: str) -> str:
    """The stand-in token recorded when no key signed: a SHA-256, not a signature."""
    message = f"{proposal_code}:{payload_sha256}:{actor_id}:{level}"
    return hashlib.sha256(message.encode("utf-8")).hexdigest()


def signers(conn: psycopg.Connection[Any]) -> list[tuple[int, str, str]]:
    """The humans who ratify APR-BOOT-AUTHMODEL-1: the ``L2_QUORUM`` active L2 actors with the
    lowest ids and the single active L4 President, as (id, name, level)."""
    with conn.cursor() as cur:
        cur.execute(
            "select id, name, level from core.actors where level = 'L2' and active"
            " order by id limit %s",
            (L2_QUORUM,),
        )
        l2 = [(int(i), str(n), str(v)) for i, n, v in cur.fetchall()]
        if len(l2) < L2_QUORUM:
            raise ValueError(f"an L2 quorum needs {L2_QUORUM} active L2 actors, found {len(l2)}")
        cur.execute(
            "select id, name, level from core.actors where level = 'L4' and active order by id"
        )
        l4 = [(int(i), str(n), str(v)) for i, n, v in cur.fetchall()]
    if len(l4) != 1:
        raise ValueError(f"expected exactly one active L4 President, found {len(l4)}")
    return [*l2, *l4]


def ratify(conn: psycopg.Connection[Any], signatures: Mapping[int, str] | None = None) -> None:
    """Record the L2 quorum and the L4 President's signature on APR-BOOT-AUTHMODEL-1.

    ``signatures`` maps each signer's actor id (see ``signers``) to the hex of the Ed25519
    signature that human made over the F plan's approval statement (`oneroof approve`; the
    demo's ``--ratify`` passes them): those values are recorded, replacing earlier ones.
    Without it, each row gets a SHA-256 stand-in token and no key signed anything.
    Idempotent. The proposal's own status is left as it is; the approvals are the record of
    the human decision.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select payload_sha256 from gov.os_proposals where code = %s", (BOOT_PROPOSAL,))
        row = cur.fetchone()
        if row is None:
            raise ValueError(f"proposal {BOOT_PROPOSAL} does not exist")
        payload_sha256 = row[0]
        quorum = signers(conn)
        if signatures is None:
            cur.executemany(
                "insert into gov.os_proposal_approvals (proposal_code, actor_id, level, "
                "signature) values (%s, %s, %s, %s) on conflict (proposal_code, actor_id) "
                "do nothing",
                [
                    (
                        BOOT_PROPOSAL,
                        actor_id,
                        level,
                        _signature(payload_sha256, BOOT_PROPOSAL, actor_id, level),
                    )
                    for actor_id, _name, level in quorum
                ],
            )
            return
        missing = [f"{name} (actor {i})" for i, name, _level in quorum if i not in signatures]
        if missing:
            raise ValueError(f"no signature of {', '.join(missing)}")
        for actor_id, value in signatures.items():
            if not re.fullmatch(r"[0-9a-f]{128}", value):
                raise ValueError(f"actor {actor_id}: not the hex of an Ed25519 signature")
        cur.executemany(
            "insert into gov.os_proposal_approvals (proposal_code, actor_id, level, signature) "
            "values (%s, %s, %s, %s) on conflict (proposal_code, actor_id) "
            "do update set signature = excluded.signature, signed_at = now()",
            [
                (BOOT_PROPOSAL, actor_id, level, signatures[actor_id])
                for actor_id, _n, level in quorum
            ],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the One-Roof reference database in an empty PostgreSQL database."
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ONEROOF_PROD_DSN"),
        help="target database (default: $ONEROOF_PROD_DSN)",
    )
    parser.add_argument("--objects", type=int, default=1000, help="number of objects (>= 1)")
    parser.add_argument(
        "--gap", type=int, default=210, help="objects left without an active responsibility owner"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument(
        "--ratify",
        action="store_true",
        help="also record the L2 quorum and L4 signature on " + BOOT_PROPOSAL,
    )
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("--dsn is required (or set ONEROOF_PROD_DSN)")
    try:
        _validate(args.objects, args.gap, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            figures = build(conn, objects=args.objects, gap=args.gap, seed=args.seed)
            if args.ratify:
                ratify(conn)
                with conn.cursor() as cur:
                    cur.execute("select count(*) from gov.os_proposal_approvals")
                    figures["approvals"] = cur.fetchone()[0]  # type: ignore[index]
    except (ValueError, psycopg.Error) as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    json.dump(figures, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
