"""Benchmark of oneroof against a live production: what the application feels.

Prints one JSON document. Two embedded servers (production and non-production) hold the
One-Roof database (--objects); an application workload (`oneroof.workload`: --clients
threads with their own connections, --rate transactions per second in all, each filing an
issue and renaming an object) runs throughout, and its latency and throughput are measured
in three phases of the same run:

- `alone`: the application by itself, for --seconds;
- `with_run`: while `oneroof run` (a separate process) runs the whole campaign — entry
  fingerprint, clone create, suites on clone and production, rehearsal, gates, exit;
- `with_clone_create`: while `oneroof clone create` (a separate process) copies production.

Each phase reports p50 and p99 latency, throughput and failed transactions; the ratios
compare with `alone`. Goals: p99 ≤ 1.5×, throughput ≥ 0.9×, no failed transaction.

    .venv/bin/python bench/live.py [--objects 20000] [--rate 100] [--clients 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from oneroof import connect, roles
from oneroof.demo import PRODUCTION_DATABASE, example_workspace, load_generator, servers
from oneroof.workload import Workload, WorkloadStats

GOALS = {"p99_ratio_max": 1.5, "throughput_ratio_min": 0.9}


def phase(stats: WorkloadStats, baseline: WorkloadStats | None, seconds: float) -> dict[str, Any]:
    data = stats.to_dict()
    data["seconds"] = round(seconds, 2)
    if baseline is not None:
        base = baseline.to_dict()
        data["p99_ratio"] = round(data["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None
        data["p50_ratio"] = round(data["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] else None
        data["throughput_ratio"] = (
            round(data["throughput_per_s"] / base["throughput_per_s"], 2)
            if base["throughput_per_s"]
            else None
        )
        data["met"] = (
            stats.failed == 0
            and (data["p99_ratio"] or 0) <= GOALS["p99_ratio_max"]
            and (data["throughput_ratio"] or 0) >= GOALS["throughput_ratio_min"]
        )
    return data


def with_command(
    dsn: str, args: argparse.Namespace, command: list[str], env: dict[str, str]
) -> tuple[WorkloadStats, float, int]:
    app = Workload(dsn, rate=args.rate, clients=args.clients).start()
    time.sleep(0.5)  # the application is writing before oneroof starts
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    stats = app.stop()
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stderr)
    return stats, seconds, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    oneroof = str(Path(sys.executable).with_name("oneroof"))
    root = Path(tempfile.mkdtemp(prefix="oneroof-bench-live-"))
    production, nonprod = servers(root)
    try:
        production.start()
        nonprod.start()
        with connect.open_admin(production.dsn()) as admin:
            admin.execute(f'create database "{PRODUCTION_DATABASE}"')
        app_dsn = production.dsn(PRODUCTION_DATABASE)
        with connect.open_admin(app_dsn) as admin:
            admin.execute(roles.reader_sql(roles.READER_ROLE, PRODUCTION_DATABASE))
        workspace = root / "workspace"
        shutil.copytree(example_workspace(), workspace)
        with connect.open_admin(app_dsn) as world:
            load_generator(workspace).build(
                world, objects=args.objects, gap=args.objects // 5, seed=1
            )
        env = dict(os.environ)
        env.update(
            ONEROOF_PROD_DSN=production.dsn(PRODUCTION_DATABASE, user=roles.READER_ROLE),
            ONEROOF_APPLY_DSN=app_dsn,
            ONEROOF_NONPROD_DSN=nonprod.dsn(),
            ONEROOF_WORKSPACE=str(workspace),
        )

        app = Workload(app_dsn, rate=args.rate, clients=args.clients).start()
        time.sleep(args.seconds)
        alone = app.stop()
        run_stats, run_seconds, run_code = with_command(app_dsn, args, [oneroof, "run"], env)
        subprocess.run([oneroof, "clone", "drop"], env=env, capture_output=True, check=True)
        create_stats, create_seconds, create_code = with_command(
            app_dsn, args, [oneroof, "clone", "create"], env
        )
        result = {
            "benchmark": "live",
            "objects": args.objects,
            "rate_per_s": args.rate,
            "clients": args.clients,
            "goals": GOALS,
            "alone": phase(alone, None, args.seconds),
            "with_run": {**phase(run_stats, alone, run_seconds), "oneroof_exit": run_code},
            "with_clone_create": {
                **phase(create_stats, alone, create_seconds),
                "oneroof_exit": create_code,
            },
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        production.remove()
        nonprod.remove()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
