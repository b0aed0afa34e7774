"""Gated rollouts: artifacts, their rehearsal on the clone, and exactly-once apply on production.

A plan is a folder of SQL artifacts (`rollout/<plan>/NN_name.sql`, run in file order). Each
artifact opens with a header of comment lines::

    -- artifact: F_prod_02_activate            (required, unique in the plan)
    -- gate: ospa >= 1                          (one or more; all must hold)
    -- requires: F_prod_01_materialize_candidates
    -- expect-delta: core.ownership ~candidates (+N inserted, ~N updated, -N deleted; N is an
    --                                          integer or a counter read at the start of the
    --                                          artifact's own transaction)
    -- stop: gap != 0                           (after the body, before commit: true → halt)
    -- auto: true                               (part of the post-gate auto-executable set)
    -- transaction: none                        (CREATE INDEX CONCURRENTLY, VACUUM, …: each
    --                                          statement on its own, in no transaction)

and its body is the rest, split into statements by the PostgreSQL parser. Its checksum is
the SHA-256 of the file's exact bytes: the text that was rehearsed is the text that runs.

Deltas are exact and measured by PostgreSQL itself (`pg_stat_xact_user_tables`, read before
and after the body inside the artifact's transaction). A declared table must match on all
three counts (an undeclared kind of a declared table must be 0), and every other table
with a non-zero delta is a mismatch: an artifact declares everything it changes.

- `rehearse` runs the whole plan on the clone in one transaction with a savepoint per
  artifact, always rolled back; gates are reported (an unratified clone has them closed),
  deltas and stops are checked; sequences are put back with `setval`, and a full
  fingerprint of the clone before and after proves it residue-free. The result goes to the
  evidence store (kind `rehearsal`).
- `apply` is the only path by which oneroof writes to production. Without `execute` it is a
  dry run. It refuses (`ForbiddenAction`, exit 3) without a passing rehearsal of exactly these
  checksums, when production drifted from the clone's source on a table the plan touches,
  when the ledger holds an artifact under another checksum, or — approvals required — without
  a quorum of signatures over the plan's digest (`oneroof.approvals`). It returns NO-GO
  (exit 1, nothing written) while a gate is closed. Each artifact then runs in its own READ
  WRITE transaction: advisory lock (one key per plan), ledger re-read (skip what another
  applier did), gates again, body, exact deltas, stops, ledger row (with the digest and
  signers) — all committed together or not at all.
- every rehearsal measures each artifact's forecast on the clone (`forecast`: locks, time,
  rewrites, index builds, constraints, WAL) and judges its hazards (`[rollout] hazards`);
  `transaction: none` artifacts are applied statement by statement, rerun-safe
  (`standalone`); docs/forecast.md.
- `watch` waits for the gates, then applies the auto-executable set and the verify
  artifacts (`auto: false` after the last auto one, read-only by the guard).
- `status` shows the ledger, the latest rehearsal and the gates.

The ledger is `<[rollout] ledger_schema>.rollout_ledger` (default `oneroof`) on production,
created by the first apply.
"""

from __future__ import annotations

from oneroof.rollout.applying import (
    APPLY_KIND,
    ARTIFACT_KIND,
    ApplyResult,
    Check,
    apply,
    watch,
)
from oneroof.rollout.artifact import (
    HEADER_KEYS,
    KINDS,
    SIGNS,
    Artifact,
    Counts,
    ExpectedDelta,
    Plan,
    load_plan,
    parse_artifact,
    resolve_plan_dir,
)
from oneroof.rollout.deltas import SHOWN_ROWS, ArtifactRun, compare_deltas, measure_deltas
from oneroof.rollout.forecast import Forecast, Hazard, judge
from oneroof.rollout.ledger import (
    LEDGER_SCHEMA,
    LEDGER_TABLE,
    LedgerRow,
    applied_artifacts,
    ledger_ddl,
    ledger_name,
    read_ledger,
)
from oneroof.rollout.linting import SQUAWK_EXCLUDED, LintFinding, lint, squawk_path
from oneroof.rollout.overview import PlanReport, PlanStatus, describe, status
from oneroof.rollout.rehearsal import REHEARSAL_KIND, Rehearsal, Say, find_rehearsal, rehearse

__all__ = [
    "APPLY_KIND",
    "ARTIFACT_KIND",
    "HEADER_KEYS",
    "KINDS",
    "LEDGER_SCHEMA",
    "LEDGER_TABLE",
    "REHEARSAL_KIND",
    "SHOWN_ROWS",
    "SIGNS",
    "SQUAWK_EXCLUDED",
    "ApplyResult",
    "Artifact",
    "ArtifactRun",
    "Check",
    "Counts",
    "ExpectedDelta",
    "Forecast",
    "Hazard",
    "LedgerRow",
    "LintFinding",
    "Plan",
    "PlanReport",
    "PlanStatus",
    "Rehearsal",
    "Say",
    "applied_artifacts",
    "apply",
    "compare_deltas",
    "describe",
    "find_rehearsal",
    "judge",
    "ledger_ddl",
    "ledger_name",
    "lint",
    "load_plan",
    "measure_deltas",
    "parse_artifact",
    "read_ledger",
    "rehearse",
    "resolve_plan_dir",
    "squawk_path",
    "status",
    "watch",
]
