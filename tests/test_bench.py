"""Every benchmark of bench/ still runs against the library it measures, at its smallest size.

The figures at this size mean nothing (fixed costs dominate); what is tested is that each
script runs to the end and prints the one JSON document its docstring promises, so that a
change of the library's signatures cannot leave `make bench` broken unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMALLEST = {
    "api.py": ["--records", "200", "--repeat", "1"],
    "clone.py": ["--rounds", "1", "--size-mb", "4"],
    "fingerprint.py": ["--catalog-tables", "20", "--size-mb", "4"],
    "forecast.py": ["--repeat", "1", "--rows", "100", "--tables", "10"],
    "live.py": ["--clients", "1", "--objects", "1000", "--rate", "20", "--seconds", "3"],
    "masking.py": ["--rounds", "1", "--size-mb", "4"],
    "reset.py": ["--rounds", "1", "--sizes-mb", "4"],
    "startup.py": ["--repeat", "1"],
    "suite.py": ["--checks", "20", "--repeat", "1"],
}

pytestmark = pytest.mark.db


def test_every_benchmark_has_its_smallest_size_here() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - {"timing.py"}
    assert scripts == set(SMALLEST), "give a new benchmark its smallest arguments in SMALLEST"


@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_a_benchmark_runs_to_the_end_and_prints_one_json_document(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *SMALLEST[script]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert isinstance(document, dict) and document, done.stdout[:500]
