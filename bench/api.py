"""Benchmark of the read-only API and dashboard over a large evidence store.

Prints one JSON document. It fills a store with --records audit records (through
`Evidence.append`, as the guard writes them), then times each request in process
(Starlette's test client), median of --repeat runs, beside the baselines measured in the
same run: the store's own read of the same page (`Evidence.page`) and its own chain
verification (`Evidence.verify`). A list costs one indexed page read whatever the size of
the store; the audit page and a record's page also verify the whole chain.

    .venv/bin/python bench/api.py [--records 20000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from oneroof import api, config
from oneroof.evidence import Evidence


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneroof-bench-api-") as tmp:
        workspace = Path(tmp)
        (workspace / "oneroof.toml").write_text('[production]\ndsn = "env:BENCH_UNSET_DSN"\n')
        cfg = config.load(workspace)
        writer = Evidence(cfg.evidence_path)
        started = time.perf_counter()
        for n in range(args.records):
            writer.audit("production", "read", f"select count(*) from t{n % 97}", "sent")
        fill_s = time.perf_counter() - started
        writer.close()
        middle = args.records // 2
        store = Evidence(cfg.evidence_path, read_only=True)
        http = TestClient(api.create_app(cfg))

        def get(path: str) -> Callable[[], object]:
            def run() -> object:
                response = http.get(path)
                assert response.status_code == 200, (path, response.text[:200])
                return response

            return run

        baselines = {
            "store_page_100": median_ms(lambda: store.page("audit", limit=100), args.repeat),
            "store_verify": median_ms(store.verify, args.repeat),
        }
        requests = {
            "/api/audit": get("/api/audit"),
            f"/api/audit?before={middle}": get(f"/api/audit?before={middle}"),
            "/api/audit?order=asc": get("/api/audit?order=asc"),
            f"/api/evidence/{middle}": get(f"/api/evidence/{middle}"),
            "/api/audit/verify": get("/api/audit/verify"),
            "/audit": get("/audit"),
            f"/evidence/{middle}": get(f"/evidence/{middle}"),
        }
        timed = {path: median_ms(run, args.repeat) for path, run in requests.items()}
        store.close()
    print(
        json.dumps(
            {
                "benchmark": "api",
                "records": args.records,
                "repeat": args.repeat,
                "python": platform.python_version(),
                "fill_seconds": round(fill_s, 2),
                "baseline_ms": baselines,
                "request_ms": timed,
                "list_over_store_page": round(
                    timed["/api/audit"] / max(baselines["store_page_100"], 0.01), 2
                ),
                "audit_page_over_verify": round(
                    timed["/audit"] / max(baselines["store_verify"], 0.01), 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
