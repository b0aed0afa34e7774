"""Benchmark of `oneroof clone create` and `reset`, against a hand-run copy in the same run.

Prints one JSON document. Two embedded servers (production, non-production); on production a
generated database of about --size-mb (narrow, wide and key-less tables with their indexes,
a trigger the isolation disables). It times, per round:

- the hand-run copy an operator would type: `pg_dump -Fd -j2` into a directory, then
  `createdb` and `pg_restore -j2` on the non-production server;
- `clone.create`: snapshot-exported `pg_dump -j2` with the full source fingerprint taken from
  the same snapshot meanwhile, `pg_restore -j2`, isolation, golden copy, markers;
- `clone.reset`: drop, copy of the golden copy, re-isolation, marker.

Targets: create ≤ 1.15 × hand-run copy; reset ≤ 0.2 × create (best of the rounds).

    .venv/bin/python bench/clone.py [--size-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from timing import timed

from oneroof import clone, config, connect
from oneroof.embedded import EmbeddedServer, bin_dir
from oneroof.workspace import Workspace

TABLES = {
    # name: (DDL, rows per MB, insert select over generate_series g, share of the size)
    "narrow": (
        "create table narrow(id bigint primary key, a int, b int)",
        18_000,
        "select g, g % 1000, g % 7 from generate_series({lo}, {hi}) g",
        0.35,
    ),
    "wide": (
        "create table wide(id bigint primary key, label text, amount numeric(12,2),"
        " ratio float8, payload jsonb, created timestamptz, flag boolean, note varchar(80))",
        2_200,
        "select g, repeat(md5(g::text), 4), (g % 100000) / 7.0, g / 3.0,"
        " jsonb_build_object('g', g, 'k', g % 13), timestamptz '2024-01-01' + g * interval '1 s',"
        " g % 2 = 0, 'note ' || g from generate_series({lo}, {hi}) g",
        0.45,
    ),
    "events": (
        "create table events(at date, kind text, value int)",  # no key, duplicates
        26_000,
        "select date '2024-01-01' + (g % 365), 'k' || (g % 50), g % 10"
        " from generate_series({lo}, {hi}) g",
        0.20,
    ),
}
EXTRA = """
create index wide_created_idx on wide (created);
create index events_at_idx on events (at, kind);
create table leases(job text primary key, holder text);
insert into leases values ('job:1', 'worker');
create function emit() returns trigger language plpgsql as $$ begin return new; end $$;
create trigger emit_wide after insert on wide for each row execute function emit();
"""

TOML = """\
[production]
dsn = "env:BENCH_PROD_DSN"
statement_timeout = "60min"
[clone]
server_dsn = "env:BENCH_NONPROD_DSN"
name = "bench_clone"
jobs = 2
[isolation]
disable_triggers = ["emit_%"]
reset_sql = ["delete from leases"]
leases_counter = "leases"
[counters]
leases = "select count(*) from leases"
[guard]
# the bench's servers have only their superuser: accepted, and said in every output
allow_privileged_role = true
"""


def build(server: EmbeddedServer, database: str, size_mb: int) -> dict[str, int]:
    rows = {}
    with connect.open_admin(server.dsn()) as admin:
        admin.execute(f"create database {database}")
    with connect.open_admin(server.dsn(database)) as conn:
        for name, (ddl, per_mb, insert, share) in TABLES.items():
            conn.execute(ddl)
            total = int(size_mb * share * per_mb)
            step = 500_000
            for lo in range(1, total + 1, step):
                hi = min(total, lo + step - 1)
                conn.execute(f"insert into {name} " + insert.format(lo=lo, hi=hi))
            rows[name] = total
        conn.execute(EXTRA)
        conn.execute("vacuum analyze")
    return rows


def _in_workspace(cfg: config.Config, action: Any) -> Any:
    """One command's worth: a Workspace opened, used and closed, as the CLI does."""
    with Workspace(cfg) as ws:
        return action(ws)


def hand_run(production: EmbeddedServer, nonprod: EmbeddedServer, work: Path) -> float:
    """What an operator types: pg_dump -Fd -j2, createdb, pg_restore -j2."""
    target = work / "hand"
    shutil.rmtree(target, ignore_errors=True)

    def run() -> None:
        dump = [str(bin_dir() / "pg_dump"), "-Fd", "-j2", "-f", str(target)]
        subprocess.run(
            [*dump, "-d", production.dsn("bench")],
            check=True,
            capture_output=True,
        )
        with connect.open_admin(nonprod.dsn()) as admin:
            admin.execute("create database hand_copy")
        subprocess.run(
            [str(bin_dir() / "pg_restore"), "-j2", "-d", nonprod.dsn("hand_copy"), str(target)],
            check=True,
            capture_output=True,
        )

    seconds, _ = timed(run)
    shutil.rmtree(target, ignore_errors=True)
    with connect.open_admin(nonprod.dsn()) as admin:
        admin.execute("drop database hand_copy with (force)")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-clone-"))
    settings = {"shared_buffers": "512MB", "maintenance_work_mem": "256MB"}
    production = EmbeddedServer(root / "production", settings=settings).start()
    nonprod = EmbeddedServer(root / "nonprod", settings=settings).start()
    try:
        build_seconds, rows = timed(lambda: build(production, "bench", args.size_mb))
        with connect.open_admin(production.dsn("bench")) as conn:
            size = conn.execute("select pg_database_size(current_database())").fetchone()
        workspace = root / "ws"
        workspace.mkdir()
        (workspace / "oneroof.toml").write_text(TOML)
        os.environ["BENCH_PROD_DSN"] = production.dsn("bench")
        os.environ["BENCH_NONPROD_DSN"] = nonprod.dsn()
        cfg = config.load(workspace)

        rounds: list[dict[str, Any]] = []
        verified = True
        phases: dict[str, float] = {}
        reset_phases: dict[str, float] = {}
        for _ in range(args.rounds):
            hand_s = hand_run(production, nonprod, root)
            create_s, info = timed(lambda: _in_workspace(cfg, clone.create))
            phases = info.phases
            reset_s, again = timed(lambda: _in_workspace(cfg, clone.reset))
            reset_phases = again.phases
            verify_s, result = timed(lambda: _in_workspace(cfg, clone.verify))
            verified = verified and result.ok
            _in_workspace(cfg, clone.drop)
            rounds.append(
                {
                    "hand_run_seconds": round(hand_s, 2),
                    "create_seconds": round(create_s, 2),
                    "reset_seconds": round(reset_s, 2),
                    "verify_seconds": round(verify_s, 2),
                }
            )
        hand = min(r["hand_run_seconds"] for r in rounds)
        create = min(r["create_seconds"] for r in rounds)
        reset = min(r["reset_seconds"] for r in rounds)
        result_doc = {
            "database_bytes": int(size[0]) if size else None,
            "rows": rows,
            "build_seconds": round(build_seconds, 1),
            "jobs": cfg.clone.jobs,
            "rounds": rounds,
            "hand_run_seconds": hand,
            "create_seconds": create,
            "reset_seconds": reset,
            "create_phases_last_round": {k: round(v, 2) for k, v in phases.items()},
            "reset_phases_last_round": {k: round(v, 2) for k, v in reset_phases.items()},
            "create_over_hand_run": round(create / hand, 3),
            "reset_over_create": round(reset / create, 3),
            "verified_after_reset": verified,
            "targets": {
                "create_le_1_15x_hand_run": create <= 1.15 * hand,
                "reset_le_0_2x_create": reset <= 0.2 * create,
            },
        }
        json.dump(result_doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    finally:
        production.remove()
        nonprod.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
