"""Benchmark of the command's start-up: whole processes, beside `python -c pass`.

Prints one JSON document. On one embedded server it creates a production database, the
least-privilege reader (the SQL of docs/safety.md) and a workspace, then times each command
as a whole process, median of --repeat runs, in the same run as the baseline
`python -c pass` (the interpreter alone):

- `version`: `oneroof --version` (goal: under 250 ms)
- `help`: `oneroof --help` (goal: under 250 ms)
- `sql_select_1`: `oneroof sql production "select 1"` — connect, read-only proof, role
  privileges, the guard's catalog, the audited statement (goal: under 600 ms)

    .venv/bin/python bench/startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oneroof import connect, roles
from oneroof.embedded import EmbeddedServer

GOALS_MS = {"version": 250.0, "help": 250.0, "sql_select_1": 600.0}
DATABASE = "startup_prod"


def median_ms(command: list[str], repeat: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    oneroof = str(Path(sys.executable).with_name("oneroof"))
    with tempfile.TemporaryDirectory(prefix="oneroof-bench-startup-") as tmp:
        root = Path(tmp)
        with EmbeddedServer(root / "pg") as server:
            with connect.open_admin(server.dsn()) as admin:
                admin.execute(f'create database "{DATABASE}"')
            with connect.open_admin(server.dsn(DATABASE)) as admin:
                admin.execute(roles.reader_sql(roles.READER_ROLE, DATABASE))
                admin.execute("create table orders (id int primary key)")
            workspace = root / "ws"
            workspace.mkdir()
            (workspace / "oneroof.toml").write_text('[production]\ndsn = "env:BENCH_PROD_DSN"\n')
            env = dict(os.environ)
            env["BENCH_PROD_DSN"] = server.dsn(DATABASE, user=roles.READER_ROLE)
            env["ONEROOF_WORKSPACE"] = str(workspace)
            baseline = median_ms([sys.executable, "-c", "pass"], args.repeat, env)
            commands = {
                "version": [oneroof, "--version"],
                "help": [oneroof, "--help"],
                "sql_select_1": [oneroof, "sql", "production", "select 1"],
            }
            results = {}
            for name, command in commands.items():
                ms = median_ms(command, args.repeat, env)
                results[name] = {
                    "median_ms": round(ms, 1),
                    "ratio_to_python": round(ms / baseline, 1),
                    "goal_ms": GOALS_MS[name],
                    "met": ms < GOALS_MS[name],
                }
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "repeat": args.repeat,
                "python_c_pass_ms": round(baseline, 1),
                "commands": results,
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
