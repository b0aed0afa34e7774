"""Benchmark of the rehearsal's forecast: what measuring an artifact costs, against its body.

Prints one JSON document. On one embedded server it makes a database of --tables tables
(four columns, an index and a foreign key each, so the catalog reads have rows to read) and
a table of --rows rows, and times, best of --repeat, inside a transaction rolled back:

- `direct`: the artifact's body alone (an UPDATE of every row of the table);
- `forecast`: the same body measured as a rehearsal measures it — the catalog, locks,
  statistics and WAL position before, then after, and the rows of the tables it names.

`overhead_ms = forecast - direct`: the forecast's cost per artifact, which grows with the
number of relations in the schema (the catalog read twice) and with the rows of the tables
the body names (counted, up to a million rows, then estimated).

    .venv/bin/python bench/forecast.py [--tables 1000] [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from timing import best

from oneroof import connect
from oneroof.embedded import EmbeddedServer
from oneroof.rollout import forecast

BODY = "update bench.target set n = n + 1"


def build(conn: psycopg.Connection[Any], tables: int, rows: int) -> None:
    conn.execute("create schema bench")
    conn.execute("create table bench.parent (id int primary key)")
    conn.execute("insert into bench.parent values (1)")
    for number in range(tables):
        conn.execute(
            f"create table bench.t{number} (id int primary key, a int, b text,"
            f" p int references bench.parent (id))"
        )
        conn.execute(f"create index on bench.t{number} (a)")
    conn.execute("create table bench.target (id int primary key, n int not null)")
    conn.execute(f"insert into bench.target select g, g from generate_series(1, {rows}) g")
    conn.execute("analyze")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneroof-bench-") as directory:
        server = EmbeddedServer(Path(directory) / "server").start()
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as admin:
                admin.execute("create database bench_clone")
            conn = psycopg.connect(server.dsn("bench_clone"), autocommit=True)
            build(conn, args.tables, args.rows)
            # a session of the clone role on a throwaway server: no guard, no marker needed
            session = connect.CloneSession(conn, connect.CLONE, None, None)

            def direct() -> None:
                with session.transaction():
                    session.execute(BODY)

            def measured() -> dict[str, Any]:
                with session.transaction():
                    probe = forecast.Probe(session, transactional=True)
                    session.execute(BODY)
                    probe.body_done()
                    result = probe.finish(
                        {"bench.target": {"inserted": 0, "updated": args.rows, "deleted": 0}}
                    )
                return result.to_dict()

            relations = conn.execute(
                "select count(*) from pg_catalog.pg_class c join pg_catalog.pg_namespace n"
                " on n.oid = c.relnamespace where n.nspname = 'bench'"
            ).fetchone()
            direct_ms, _ = best(args.repeat, direct)
            forecast_ms, sample = best(args.repeat, measured)
            conn.close()
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "benchmark": "forecast",
                "python": platform.python_version(),
                "tables": args.tables,
                "relations": int(relations[0]) if relations else None,
                "rows": args.rows,
                "repeat": args.repeat,
                "direct_ms": round(direct_ms, 2),
                "forecast_ms": round(forecast_ms, 2),
                "overhead_ms": round(forecast_ms - direct_ms, 2),
                "forecast": forecast.summary("bench", sample),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
