"""Benchmark of a masked `oneroof clone create` against an unmasked one on the same database.

Prints one JSON document. Two embedded servers (production, non-production); on production a
generated database of about --size-mb: the narrow, wide and key-less tables of bench/clone.py
(three quarters of it) and a quarter of personal data — `customers` (unique e-mail, name,
phone, birth date) and `orders`, whose composite key starts with the customer's e-mail, a
foreign key. Production is read by the least-privilege reader (docs/safety.md).

Per round it times `clone.create` unmasked and then masked — `[masking]` masks the e-mail
(carried to orders across the foreign key), the name, the phone and the birth date — and
runs `clone verify` on the masked clone (the proof: 0 production values present). The figure
is masked create ÷ unmasked create, best of the rounds. Goal: ≤ 1.5.

    .venv/bin/python bench/masking.py [--size-mb 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from timing import timed

from oneroof import clone, config, connect, roles
from oneroof.embedded import EmbeddedServer
from oneroof.workspace import Workspace

TABLES = {
    # name: (DDL, rows per MB, insert select over generate_series g, share of the size)
    "narrow": (
        "create table narrow(id bigint primary key, a int, b int)",
        18_000,
        "select g, g % 1000, g % 7 from generate_series({lo}, {hi}) g",
        0.25,
    ),
    "wide": (
        "create table wide(id bigint primary key, label text, amount numeric(12,2),"
        " ratio float8, payload jsonb, created timestamptz, flag boolean, note varchar(80))",
        2_200,
        "select g, repeat(md5(g::text), 4), (g % 100000) / 7.0, g / 3.0,"
        " jsonb_build_object('g', g, 'k', g % 13), timestamptz '2024-01-01' + g * interval '1 s',"
        " g % 2 = 0, 'note ' || g from generate_series({lo}, {hi}) g",
        0.35,
    ),
    "events": (
        "create table events(at date, kind text, value int)",
        26_000,
        "select date '2024-01-01' + (g % 365), 'k' || (g % 50), g % 10"
        " from generate_series({lo}, {hi}) g",
        0.15,
    ),
    "customers": (
        "create table customers(id bigint primary key, email text not null unique,"
        " full_name text, phone text, born date, city text)",
        5_500,
        "select g, 'user' || g || '@mail' || (g % 997) || '.example.com',"
        " initcap(substr(md5(g::text), 1, 3 + g % 5)) || ' '"
        " || initcap(substr(md5((g + 7)::text), 2, 5 + g % 7)),"
        " '+49 ' || (150 + g % 30) || ' ' || lpad((g % 10000000)::text, 7, '0'),"
        " date '1940-01-01' + (g % 25000), 'city ' || (g % 500)"
        " from generate_series({lo}, {hi}) g",
        0.15,
    ),
}
ORDERS_SHARE = 0.10
ORDERS_PER_MB = 9_000
ORDERS = (
    "create table orders(customer_email text not null references customers (email),"
    " order_no int not null, total numeric(10, 2), primary key (customer_email, order_no))"
)
EXTRA = """
create index wide_created_idx on wide (created);
create index events_at_idx on events (at, kind);
"""

TOML = """\
[production]
dsn = "env:BENCH_PROD_DSN"
statement_timeout = "60min"
[clone]
server_dsn = "env:BENCH_NONPROD_DSN"
name = "{name}"
jobs = 2
"""
MASKING = """\
[masking]
key = "env:BENCH_MASK_KEY"
"public.customers.email" = "email"
"public.customers.full_name" = "name"
"public.customers.phone" = "phone"
"public.customers.born" = "null"
"""


def build(server: EmbeddedServer, database: str, size_mb: int) -> dict[str, int]:
    rows = {}
    with connect.open_admin(server.dsn()) as admin:
        admin.execute(f"create database {database}")
    with connect.open_admin(server.dsn(database)) as conn:
        for name, (ddl, per_mb, insert, share) in TABLES.items():
            conn.execute(ddl)
            total = int(size_mb * share * per_mb)
            for lo in range(1, total + 1, 500_000):
                hi = min(total, lo + 499_999)
                conn.execute(f"insert into {name} " + insert.format(lo=lo, hi=hi))
            rows[name] = total
        conn.execute(ORDERS)
        customers = rows["customers"]
        total = int(size_mb * ORDERS_SHARE * ORDERS_PER_MB)
        for lo in range(1, total + 1, 500_000):
            hi = min(total, lo + 499_999)
            conn.execute(
                "insert into orders select 'user' || c || '@mail' || (c % 997) || '.example.com',"
                f" g, g % 1000 from (select g, 1 + g % {customers} c"
                f" from generate_series({lo}, {hi}) g) s"
            )
        rows["orders"] = total
        conn.execute(EXTRA)
        conn.execute(roles.reader_sql(roles.READER_ROLE, database))
        conn.execute("vacuum analyze")
    return rows


def workspace(root: Path, name: str, text: str) -> Workspace:
    directory = root / name
    directory.mkdir(exist_ok=True)
    (directory / "oneroof.toml").write_text(text)
    return Workspace(config.load(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-masking-"))
    settings = {"shared_buffers": "512MB", "maintenance_work_mem": "256MB"}
    production = EmbeddedServer(root / "production", settings=settings).start()
    nonprod = EmbeddedServer(root / "nonprod", settings=settings).start()
    try:
        build_seconds, rows = timed(lambda: build(production, "bench", args.size_mb))
        with connect.open_admin(production.dsn("bench")) as conn:
            size = conn.execute("select pg_database_size(current_database())").fetchone()
            personal = conn.execute(
                "select pg_total_relation_size('customers') + pg_total_relation_size('orders')"
            ).fetchone()
        os.environ["BENCH_PROD_DSN"] = production.dsn("bench", user=roles.READER_ROLE)
        os.environ["BENCH_NONPROD_DSN"] = nonprod.dsn()
        os.environ["BENCH_MASK_KEY"] = "bench-masking-key-0123456789"
        plain_toml = TOML.format(name="plain_clone")
        masked_toml = TOML.format(name="masked_clone") + MASKING
        rounds: list[dict[str, Any]] = []
        verified = True
        proof = ""
        phases: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            with workspace(root, "plain", plain_toml) as ws:
                plain_s, info = timed(lambda ws=ws: clone.create(ws))
                phases["unmasked"] = info.phases
                clone.drop(ws)
            with workspace(root, "masked", masked_toml) as ws:
                masked_s, info = timed(lambda ws=ws: clone.create(ws))
                phases["masked"] = info.phases
            with workspace(root, "masked", masked_toml) as ws:
                verify_s, result = timed(lambda ws=ws: clone.verify(ws))
                verified = verified and result.ok
                proof = next((p.detail for p in result.points if p.name == "masking"), "")
                clone.drop(ws)
            rounds.append(
                {
                    "unmasked_create_seconds": round(plain_s, 2),
                    "masked_create_seconds": round(masked_s, 2),
                    "masked_verify_seconds": round(verify_s, 2),
                }
            )
        plain = min(r["unmasked_create_seconds"] for r in rounds)
        masked = min(r["masked_create_seconds"] for r in rounds)
        document = {
            "database_bytes": int(size[0]) if size else None,
            "personal_data_bytes": int(personal[0]) if personal else None,
            "rows": rows,
            "build_seconds": round(build_seconds, 1),
            "rounds": rounds,
            "unmasked_create_seconds": plain,
            "masked_create_seconds": masked,
            "masked_over_unmasked": round(masked / plain, 3),
            "phases_last_round": {
                k: {p: round(s, 2) for p, s in v.items()} for k, v in phases.items()
            },
            "verified": verified,
            "proof": proof,
            "targets": {"masked_le_1_5x_unmasked": masked <= 1.5 * plain},
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    finally:
        production.remove()
        nonprod.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
