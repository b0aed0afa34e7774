"""Benchmark of `oneroof fingerprint`, against baselines measured in the same run.

Prints one JSON document. On a generated database of about --size-mb (several tables,
narrow and wide) it times: the full fingerprint with 1 and 2 jobs; the scan floor (the sum
of `select count(*)` over the same tables); `pg_dump | sha256sum`; the catalog mode on a
database of 1,000 tables; and the constant-time WAL-equal exit proof.

    .venv/bin/python bench/fingerprint.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import timed

from oneroof import config, connect, fingerprint
from oneroof.embedded import EmbeddedServer, bin_dir
from oneroof.evidence import Evidence

TABLES = {
    # name: (DDL, rows per MB, insert select over generate_series g)
    "narrow": (
        "create table narrow(id bigint primary key, a int, b int)",
        24_000,
        "select g, g % 1000, g % 7 from generate_series({lo}, {hi}) g",
    ),
    "wide": (
        "create table wide(id bigint, label text, amount numeric(12,2), ratio float8,"
        " payload jsonb, created timestamptz, flag boolean, note varchar(80))",
        2_400,
        "select g, repeat(md5(g::text), 4), (g % 100000) / 7.0, g / 3.0,"
        " jsonb_build_object('g', g, 'k', g % 13), timestamptz '2024-01-01' + g * interval '1 s',"
        " g % 2 = 0, 'note ' || g from generate_series({lo}, {hi}) g",
    ),
    "events": (
        "create table events(at date, kind text, value int)",  # no key, duplicates
        30_000,
        "select date '2024-01-01' + (g % 365), 'k' || (g % 50), g % 10"
        " from generate_series({lo}, {hi}) g",
    ),
}
SHARES = {"narrow": 0.4, "wide": 0.45, "events": 0.15}


def build(server: EmbeddedServer, database: str, size_mb: int) -> dict[str, int]:
    rows = {}
    with connect.open_admin(server.dsn()) as admin:
        admin.execute(f"create database {database}")
    with connect.open_admin(server.dsn(database)) as conn:
        for name, (ddl, per_mb, insert) in TABLES.items():
            conn.execute(ddl)
            total = int(size_mb * SHARES[name] * per_mb)
            step = 500_000
            for lo in range(1, total + 1, step):
                hi = min(total, lo + step - 1)
                conn.execute(f"insert into {name} " + insert.format(lo=lo, hi=hi))
            rows[name] = total
        conn.execute("vacuum analyze")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--catalog-tables", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-fp-"))
    server = EmbeddedServer(root / "server", settings={"shared_buffers": "512MB"}).start()
    try:
        build_seconds, rows = timed(lambda: build(server, "bench", args.size_mb))
        with connect.open_admin(server.dsn("bench")) as conn:
            size = conn.execute("select pg_database_size(current_database())").fetchone()
        workspace = root / "ws"
        workspace.mkdir()
        (workspace / "oneroof.toml").write_text(
            '[production]\ndsn = "env:BENCH_DSN"\nstatement_timeout = "30min"\n'
            "scan_budget_rows = 1000000000\n"
            # the bench's server has only its superuser: accepted, and said in every output
            "[guard]\nallow_privileged_role = true\n"
        )
        os.environ["BENCH_DSN"] = server.dsn("bench")
        cfg = config.load(workspace)
        evidence = Evidence(cfg.evidence_path)

        def full(jobs: int) -> fingerprint.Fingerprint:
            with connect.open_production(cfg, evidence) as session:
                return fingerprint.take(
                    session,
                    mode="full",
                    jobs=jobs,
                    open_session=lambda: connect.open_production(cfg, evidence),
                )

        def scan_floor() -> int:
            total = 0
            with connect.open_admin(server.dsn("bench")) as conn:
                for name in TABLES:
                    row = conn.execute(f"select count(*) from {name}").fetchone()
                    total += int(row[0]) if row else 0
            return total

        full(1)  # warm the cache so every measurement reads from the same memory
        floor_s, _ = timed(scan_floor)
        full1_s, fp1 = timed(lambda: full(1))
        full2_s, fp2 = timed(lambda: full(2))
        floor_again_s, _ = timed(scan_floor)

        def wal_proof() -> bool:
            with connect.open_production(cfg, evidence) as session:
                return fingerprint.wal_unchanged(session, fp2.wal)

        wal_s, wal_equal = timed(wal_proof)
        dump_s, _ = timed(
            lambda: subprocess.run(
                f"'{bin_dir() / 'pg_dump'}' -d '{server.dsn('bench')}' | sha256sum",
                shell=True,
                check=True,
                capture_output=True,
            )
        )

        with connect.open_admin(server.dsn()) as admin:
            admin.execute("create database many")
        with connect.open_admin(server.dsn("many")) as conn:
            for index in range(args.catalog_tables):
                conn.execute(
                    f"create table t{index}(id int primary key, name text not null default 'x',"
                    f" v numeric check (v >= 0))"
                )
        os.environ["BENCH_DSN"] = server.dsn("many")
        with connect.open_production(cfg, evidence) as session:
            catalog_s, catalog_fp = timed(lambda: fingerprint.take(session, mode="catalog"))
        os.environ["BENCH_DSN"] = server.dsn("bench")

        floor = min(floor_s, floor_again_s)
        result = {
            "database_bytes": int(size[0]) if size else None,
            "rows": rows,
            "build_seconds": round(build_seconds, 2),
            "scan_floor_seconds": round(floor, 3),
            "full_jobs1_seconds": round(full1_s, 3),
            "full_jobs2_seconds": round(full2_s, 3),
            "pg_dump_sha256sum_seconds": round(dump_s, 3),
            "full_over_scan_floor": round(full1_s / floor, 2),
            "full_over_pg_dump": round(full1_s / dump_s, 3),
            "jobs2_speedup": round(full1_s / full2_s, 2),
            "catalog_tables": args.catalog_tables,
            "catalog_seconds": round(catalog_s, 3),
            "catalog_objects": len(catalog_fp.sections["schema"]),
            "wal_exit_proof_seconds": round(wal_s, 4),
            "wal_equal": wal_equal,
            "same_id_jobs1_jobs2": fp1.id == fp2.id,
            "targets": {
                "full_le_4x_scan_floor": full1_s <= 4 * floor,
                "full_le_half_pg_dump": full1_s <= 0.5 * dump_s,
                "jobs2_faster": full2_s < full1_s,
                "catalog_under_1s": catalog_s < 1.0,
                "wal_proof_under_50ms": wal_s < 0.05,
            },
        }
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    finally:
        server.remove()


if __name__ == "__main__":
    main()
