"""Check suites and rehearsal scenarios: parse `*.sql` files, run them rollback-only, prove it.

A *check file* holds many checks; each is one statement with an expectation and runs in its
own transaction, always rolled back. A *scenario file* holds one scenario: steps that may
write and assertions with an expectation, all in one transaction, always rolled back; every
step and assertion runs in its own savepoint, so later steps see earlier ones and an expected
error does not end the scenario. The formats:

    -- check: no_orphans                 -- scenario: promote
    -- expect: empty                     -- step: add an axis
    -- timeout: 5s                       insert into core.axes(code) values ('topic');
    select … ;                           -- assert: one axis more
                                         -- expect: value=2
                                         select count(*) from core.axes;

Expectations: `empty`, `rows=N`, `value=X`, `true`, `error` and `error=SQLSTATE` (the
statement must fail, with that SQLSTATE or condition name). A directive is a line that is
only a `-- keyword: value` comment; any other comment is left to the SQL.

Every file of a run is parsed before any SQL is sent; a file that does not parse raises
`BadInput` naming file and line. On production every statement goes through the guard: a
check that writes is refused (and audited) and a scenario with any statement that is not a
plain read is reported as not applicable before anything is sent. On the clone the run is
bracketed by two full fingerprints and sequences — which do not roll back — are put back
with `setval`, so the result can say "residue-free" or name what is left.
"""

from oneroof.residue import SECTIONS as RESIDUE_SECTIONS
from oneroof.residue import Residue, read_sequences, restore_sequences
from oneroof.sqltext import Statement, duration_ms
from oneroof.suite.formats import to_junit, to_tap
from oneroof.suite.parsing import (
    ASSERT,
    CHECK,
    CHECKS,
    FAILING,
    SCENARIO,
    SKIPPED,
    STEP,
    TIMEOUT_SQLSTATE,
    Expectation,
    Item,
    Status,
    SuiteFile,
    load,
    parse,
    parse_expectation,
)
from oneroof.suite.results import FileResult, ItemResult, RunResult
from oneroof.suite.runner import EVIDENCE_KIND, TARGETS, run

__all__ = [
    "ASSERT",
    "CHECK",
    "CHECKS",
    "EVIDENCE_KIND",
    "FAILING",
    "RESIDUE_SECTIONS",
    "SCENARIO",
    "SKIPPED",
    "STEP",
    "TARGETS",
    "TIMEOUT_SQLSTATE",
    "Expectation",
    "FileResult",
    "Item",
    "ItemResult",
    "Residue",
    "RunResult",
    "Statement",
    "Status",
    "SuiteFile",
    "duration_ms",
    "load",
    "parse",
    "parse_expectation",
    "read_sequences",
    "restore_sequences",
    "run",
    "to_junit",
    "to_tap",
]
