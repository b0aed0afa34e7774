"""Benchmark of `oneroof check`: the runner's overhead per check, against plain psycopg.

Prints one JSON document. On one embedded server it creates a production database, a marked
clone and a workspace, writes --checks trivial checks (`select 1`, `expect: value=1`) in ten
files, and times, best of --repeat:

- `runner`: `suite.load` + `suite.run(target="clone", residue=False)` — parse, guarded
  sessions, a rolled-back transaction and a statement timeout per check, judging, the
  evidence record;
- `runner_with_residue_proof`: the same with the full before/after fingerprints and the
  sequence restore;
- `direct`: the same statements sent by psycopg on one connection, each in its own
  transaction, rolled back.

`overhead_ms_per_check = (runner - direct) / checks`; the target is under 2 ms.

    .venv/bin/python bench/suite.py [--checks 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from timing import best

from oneroof import config, connect, suite
from oneroof.embedded import EmbeddedServer
from oneroof.workspace import Workspace

TARGET_MS_PER_CHECK = 2.0
FILES = 10
CLONE = "bench_clone"
PRODUCTION = "bench_prod"
# A small schema on both databases, so the residue proof has tables and a sequence to read.
SCHEMA = """
create table items (id bigserial primary key, label text, amount numeric(10, 2));
insert into items (label, amount) select 'item ' || g, g / 7.0 from generate_series(1, 10000) g;
create table events (at date, kind text);
insert into events select date '2024-01-01' + (g % 365), 'k' || (g % 9)
from generate_series(1, 10000) g;
"""


def setup(server: EmbeddedServer, workspace: Path) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        for name in (PRODUCTION, CLONE):
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        marker = json.dumps({connect.MARKER_KEY: {"method": "bench"}})
        admin.execute(
            sql.SQL("comment on database {} is {}").format(
                sql.Identifier(CLONE), sql.Literal(marker)
            )
        )
    for name in (PRODUCTION, CLONE):
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:
            conn.execute(SCHEMA)
    workspace.mkdir(parents=True)
    (workspace / "oneroof.toml").write_text(
        "[production]\n"
        f"dsn = {json.dumps(server.dsn(PRODUCTION))}\n"
        "[clone]\n"
        f"server_dsn = {json.dumps(server.dsn())}\n"
        f'name = "{CLONE}"\n'
        # the bench's one server has only its superuser: said, not hidden
        "[guard]\n"
        "allow_privileged_role = true\n"
    )


def write_checks(folder: Path, checks: int) -> list[Path]:
    folder.mkdir(parents=True)
    per_file = -(-checks // FILES)
    paths = []
    for number in range(FILES):
        lines = []
        for index in range(number * per_file, min(checks, (number + 1) * per_file)):
            lines.append(f"-- check: trivial_{index:05d}\n-- expect: value=1\nselect 1;\n")
        path = folder / f"{number:02d}.sql"
        path.write_text("\n".join(lines))
        paths.append(path)
    return paths


def direct(dsn: str, checks: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(checks):
            with conn.transaction(force_rollback=True):
                value = conn.execute("select 1").fetchall()
            assert value == [(1,)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-suite-"))
    server = EmbeddedServer(root / "server").start()
    try:
        workspace = root / "workspace"
        setup(server, workspace)
        cfg = config.load(workspace)
        paths = write_checks(workspace / "checks", args.checks)

        def runner(residue: bool) -> suite.RunResult:
            files = suite.load(paths)
            with Workspace(cfg) as ws:
                return suite.run(ws, files, target="clone", residue=residue)

        load_ms, files = best(args.repeat, lambda: suite.load(paths))
        assert sum(len(f.items) for f in files) == args.checks
        direct(server.dsn(CLONE), 50)  # warm the server up
        direct_ms, _ = best(args.repeat, lambda: direct(server.dsn(CLONE), args.checks))
        runner_ms, result = best(args.repeat, lambda: runner(False))
        assert result.ok and result.passed == result.total == args.checks, result.summary()
        proof_ms, proved = best(args.repeat, lambda: runner(True))
        assert proved.ok and proved.residue_free is True, proved.summary()
        overhead = (runner_ms - direct_ms) / args.checks
        report = {
            "benchmark": "suite",
            "checks": args.checks,
            "files": FILES,
            "repeat": args.repeat,
            "server_version": _version(server),
            "python": platform.python_version(),
            "direct_ms": round(direct_ms, 1),
            "runner_ms": round(runner_ms, 1),
            "runner_with_residue_proof_ms": round(proof_ms, 1),
            "residue_proof_ms": round(proved.residue.ms if proved.residue else 0.0, 1),
            "load_ms": round(load_ms, 1),
            "direct_ms_per_check": round(direct_ms / args.checks, 4),
            "runner_ms_per_check": round(runner_ms / args.checks, 4),
            "overhead_ms_per_check": round(overhead, 4),
            "overhead_with_residue_proof_ms_per_check": round(
                (proof_ms - direct_ms) / args.checks, 4
            ),
            "target_ms_per_check": TARGET_MS_PER_CHECK,
            "meets_target": overhead < TARGET_MS_PER_CHECK,
            "summary": result.summary(),
            "summary_with_residue_proof": proved.summary(),
        }
        print(json.dumps(report, indent=2))
    finally:
        server.remove()


def _version(server: EmbeddedServer) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0]) if row else "unknown"


if __name__ == "__main__":
    main()
