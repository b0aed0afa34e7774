"""Benchmark of `clone reset` by file clone against database size, and against `clone create`.

Prints one JSON document. Production is an embedded server on the ordinary disk; the
non-production server runs with its data directory on a loop-mounted XFS image with
reflinks (`oneroof.embedded.XfsVolume`: root, losetup, mkfs.xfs) and with durability on
(fsync, synchronous commit, full-page writes: a copy must reach the disk, as on a real
server). For each size it builds a production database of about that many MB, then times:

- `clone.create` (dump from one snapshot, restore, isolation, golden copy, markers);
- `clone.reset` with `[clone] file_copy_method = "clone"` (FILE_COPY sharing extents),
  and with `"copy"` (the baseline of the same run: every byte written again);
- the server's own `CREATE DATABASE … STRATEGY FILE_COPY` under each method (the floor
  oneroof's reset adds its drop, isolation and markers to).

Goals: reset by clone flat in size (largest ÷ smallest ≤ 2) and ≤ 0.02 × create at 1 GB.
Where no XFS volume can be made it prints {"skipped": why}.

    .venv/bin/python bench/reset.py [--sizes-mb 64,256,1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from timing import timed

from oneroof import clone, config, connect, roles
from oneroof.embedded import EmbeddedServer, XfsVolume
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace

ROW_BYTES = 330  # of one row of `items` below, with its share of the index
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}

TOML = """\
[production]
dsn = "env:BENCH_PROD_DSN"
statement_timeout = "60min"
[clone]
server_dsn = "env:BENCH_NONPROD_DSN"
name = "bench_{size}_clone"
jobs = 2
file_copy_method = "{method}"
[isolation]
reset_sql = ["delete from leases"]
[counters]
items = "select count(*) from items"
"""


def build(server: EmbeddedServer, database: str, size_mb: int) -> int:
    """A production database of about `size_mb`; returns its size in bytes."""
    with connect.open_admin(server.dsn()) as admin:
        admin.execute(f"create database {database}")
    with connect.open_admin(server.dsn(database)) as conn:
        conn.execute(roles.reader_sql(roles.READER_ROLE, database).split(";\n", 1)[1])
        conn.execute(
            "create table items (id bigint primary key, label text, amount numeric(12, 2),"
            " created timestamptz)"
        )
        total = size_mb * 1024 * 1024 // ROW_BYTES
        for low in range(1, total + 1, 500_000):
            high = min(total, low + 499_999)
            conn.execute(
                "insert into items select g, repeat(md5(g::text), 7), g % 100000 / 7.0,"
                " timestamptz '2024-01-01' + g * interval '1 s'"
                f" from generate_series({low}, {high}) g"
            )
        conn.execute("create table leases (job text primary key, holder text)")
        conn.execute("insert into leases values ('job:1', 'worker')")
        conn.execute("vacuum analyze")
        row = conn.execute("select pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def workspace(root: Path, size: int, method: str) -> Workspace:
    directory = root / f"ws{size}"
    directory.mkdir(exist_ok=True)
    (directory / "oneroof.toml").write_text(TOML.format(size=size, method=method))
    cfg = config.load(directory)
    return Workspace(cfg, Evidence(cfg.evidence_path))


def raw_copy(nonprod: EmbeddedServer, template: str, method: str) -> float:
    """The server alone: CREATE DATABASE … STRATEGY FILE_COPY under `method`, then drop."""
    with connect.open_admin(nonprod.dsn()) as admin:
        admin.execute(f"set file_copy_method = {method}")
        start = time.perf_counter()
        admin.execute(f"create database bench_raw template {template} strategy file_copy")
        seconds = time.perf_counter() - start
        admin.execute("drop database bench_raw")
    return seconds


def measure(
    root: Path, production: EmbeddedServer, nonprod: EmbeddedServer, size_mb: int, rounds: int
) -> dict[str, Any]:
    database = f"bench_{size_mb}"
    build_s, size = timed(lambda: build(production, database, size_mb))
    # production is read as it would be: by the least-privilege reader
    os.environ["BENCH_PROD_DSN"] = production.dsn(database, user=roles.READER_ROLE)
    os.environ["BENCH_NONPROD_DSN"] = nonprod.dsn()
    with workspace(root, size_mb, "clone") as ws:
        create_s, made = timed(lambda: clone.create(ws))
    golden = made.golden
    resets: dict[str, list[float]] = {"clone": [], "copy": []}
    copies: dict[str, list[float]] = {"clone": [], "copy": []}
    described: dict[str, str] = {}
    for _ in range(rounds):
        for method in ("clone", "copy"):
            with workspace(root, size_mb, method) as ws:
                seconds, info = timed(lambda ws=ws: clone.reset(ws))
            resets[method].append(seconds)
            copies[method].append(float(info.copy.get("seconds") or 0.0))
            described[method] = str(info.copy.get("describe"))
    raw = {m: min(raw_copy(nonprod, golden, m) for _ in range(rounds)) for m in ("clone", "copy")}
    with workspace(root, size_mb, "clone") as ws:
        verified = clone.verify(ws).ok
        clone.drop(ws)
    with connect.open_admin(production.dsn()) as admin:
        admin.execute(f"drop database {database} with (force)")
    best = {m: min(v) for m, v in resets.items()}
    return {
        "size_mb": size_mb,
        "database_bytes": size,
        "build_seconds": round(build_s, 1),
        "create_seconds": round(create_s, 2),
        "create_phases": {k: round(v, 2) for k, v in made.phases.items()},
        "reset_clone_seconds": round(best["clone"], 3),
        "reset_clone_median_seconds": round(statistics.median(resets["clone"]), 3),
        "reset_copy_seconds": round(best["copy"], 3),
        "copy_phase_clone_seconds": round(min(copies["clone"]), 3),
        "copy_phase_copy_seconds": round(min(copies["copy"]), 3),
        "server_file_copy_clone_seconds": round(raw["clone"], 3),
        "server_file_copy_copy_seconds": round(raw["copy"], 3),
        "reset_clone_over_create": round(best["clone"] / create_s, 4),
        "reset_copy_over_create": round(best["copy"] / create_s, 4),
        "method_clone": described["clone"],
        "method_copy": described["copy"],
        "verified_after_resets": verified,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mb", default="64,256,1024")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mb.split(",") if s.strip()]
    missing = XfsVolume.missing()
    if missing is not None:
        print(json.dumps({"benchmark": "reset", "skipped": missing}))
        return
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-reset-"))
    volume_bytes = max(8, 6 * max(sizes) // 1024 + 4) * 1024**3
    production = EmbeddedServer(root / "production", settings={"shared_buffers": "256MB"})
    try:
        production.start()
        with connect.open_admin(production.dsn()) as admin:
            admin.execute(roles.reader_sql(roles.READER_ROLE, "postgres"))
        with XfsVolume(root / "xfs", volume_bytes) as volume:
            nonprod = EmbeddedServer(
                volume.mount / "nonprod", settings={**DURABLE, "shared_buffers": "256MB"}
            ).start()
            try:
                results = [measure(root, production, nonprod, s, args.rounds) for s in sizes]
            finally:
                nonprod.remove()
    finally:
        production.remove()
        shutil.rmtree(root, ignore_errors=True)
    smallest, largest = results[0], results[-1]
    flat = largest["reset_clone_seconds"] / max(smallest["reset_clone_seconds"], 1e-6)
    at_1gb = [r for r in results if r["size_mb"] >= 1024]
    document = {
        "benchmark": "reset",
        "server": "PostgreSQL 18 (embedded), data directory on XFS reflink=1, durable",
        "rounds": args.rounds,
        "sizes": results,
        "reset_clone_largest_over_smallest": round(flat, 2),
        "targets": {
            "reset_clone_flat_le_2x": flat <= 2,
            "reset_clone_le_0_02x_create_at_1gb": (
                all(r["reset_clone_over_create"] <= 0.02 for r in at_1gb) if at_1gb else None
            ),
        },
    }
    json.dump(document, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
