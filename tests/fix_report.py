"""Fixture plugin: a report built by hand, for renderer and API tests, and `demo_run`, the
demo run for real by the tests that need its campaigns."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oneroof import demo, report

DEMO_ENVIRONMENT = ("ONEROOF_PROD_DSN", "ONEROOF_APPLY_DSN", "ONEROOF_NONPROD_DSN")


@contextlib.contextmanager
def demo_run(prefix: str, **options: Any) -> Iterator[demo.DemoResult]:
    """`oneroof demo` (`demo.run(**options)`) in a directory of its own, removed afterwards
    with the servers of a kept demo. The demo exports its servers' DSNs: they are put back
    when it ends, so a kept demo's `dsns(result.directory)` is how to reach them."""
    # outside pytest's basetemp: the embedded servers' socket paths must stay short
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in DEMO_ENVIRONMENT:
                patch.setenv(name, "unset")
            result = demo.run(directory=root / "demo", **options)
        assert result.ok, [r.report.final_status for r in result.reports]
        yield result
    finally:
        if options.get("keep"):
            demo.stop(root / "demo")
        shutil.rmtree(root, ignore_errors=True)


def sample(final: str = report.PASS) -> report.Report:
    return report.Report(
        title="demo — Final GO/NO-GO",
        generated_at="2026-11-24T00:00:00+00:00",
        final_status=final,
        headline="7 objectives advanced",
        verdicts=[
            report.Verdict(
                "Production safety", report.PASS, "entry==exit fingerprint 69c674c3…", evidence=[3]
            ),
            report.Verdict("B axis/topic", report.PASS, "7/7", qualifier="prototype"),
            report.Verdict("C <events>", report.FAIL, "8/9", reasons=["emit: failed | x"]),
        ],
        matrix=[
            report.MatrixRow("Production ownership seed", report.NO_GO, "ospa >= 1", {"ospa": 0}),
            report.MatrixRow(
                "Clone suite", report.GO, "clone_verified", {"clone_verified": True}, scope="clone"
            ),
        ],
        blockers=[
            report.Blocker(
                "Production ownership seed", "L2/L4 human ratification", "ospa >= 1", {"ospa": 0}
            )
        ],
        next_macros=["On gate open (ospa >= 1) — run F_prod_00 → 01 → 02"],
        compliance=report.Compliance(12, 1, 1, 0, 0, 0, True, True),
        # not in alphabetical order: every form of the report keeps this one
        facts={"started": "2026-11-24", "entry fingerprint": "69c674c3…", "clone": "x_clone"},
        notes=["A result on the clone is evidence, not authorisation."],
        id="OR-7-0123abcd",
        counters=[report.CounterRow("ospa", 0, "approvals recorded", [3])],
        fingerprints={"entry": "69c674c3" + "0" * 56},
    )
