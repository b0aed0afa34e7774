"""Fixture plugin: a report built by hand, for renderer and API tests."""

from __future__ import annotations

from oneroof import report


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
