"""Masking: personal data leaves production only masked, and the clone proves it.

`[masking]` names columns and the rule that masks each (`"schema.table.column" = "RULE"`).
`plan()` checks the rules against production's catalog: the table and column exist, the
rule fits the column's type, NOT NULL, unique keys and exclusion constraints, and it carries
a masked key column across every foreign key (both ways), so references keep matching.

The data of a masked table never reaches the non-production server unmasked: `clone create`
leaves it out of pg_dump (`--exclude-table-data`) and reads it with `COPY (SELECT <masking
expressions> …) TO STDOUT` from the very snapshot pg_dump reads (in the transaction that
exported it, and in up to `[clone] jobs` more sessions that import it), so the masks run on
production, in READ ONLY transactions, with built-in functions only, and every statement
passes the guard. The rows are written into the clone after pg_restore's
pre-data section, beside its data section and before its post-data one, so the indexes and
foreign keys are built (and validated) over the masked rows.

Deterministic rules (email, name, phone, digits, hash) are keyed hashes of the value's text:
the same value masks to the same result in every table and every run, whatever the row (a
format-keeping mask that is itself a production value of the columns it must mask alike is
masked once more, so no real value is produced by chance). The
key (`[masking] key`, `env:NAME` or literal) is sent to production only, as the bound
parameter of one internal statement that sets a transaction-local setting
(`connect.SET_MASK_KEY`): COPY takes no server-side parameters, and the text of a statement
is audited. Without the key nobody can recompute a mask, so nobody can test a guess.

`prove()` is the proof `clone verify` shows: for each masked column, keyed hashes (with a
fresh random key each time) of the distinct values of both sides, streamed sorted from each
server and merged in constant memory, share no value; the other columns of masked tables
still equal production's at the snapshot. `suggest()` points at columns that look personal.

Every name reaching SQL is a `psycopg.sql.Identifier`; constants are `Literal`s.

One module per concept: `rules` (what `[masking]` writes), `planning` (production's catalog
and the plan), `expressions` (the masking SQL), `transfer` (reading masked, writing into the
clone), `proof` (what `clone verify` shows) and `suggestions` (`masking suggest`).
"""

from __future__ import annotations

from oneroof.masking.expressions import (
    as_text,
    email_expression,
    export_query,
    format_keeping,
    hash_expression,
    hash_stream_query,
    key_source,
    load_statement,
    value_text,
)
from oneroof.masking.planning import (
    Catalog,
    Column,
    ForeignKey,
    Masked,
    Plan,
    Relation,
    TablePlan,
    UniqueKey,
    build,
    plan,
)
from oneroof.masking.proof import ColumnProof, prove, shared_values
from oneroof.masking.rules import (
    DETERMINISTIC,
    EMAIL_LENGTH,
    FORMAT_RULES,
    MIN_KEY_LENGTH,
    RULE_KINDS,
    Configured,
    Rule,
    check_expression,
    configured,
    parse_column,
    parse_rule,
    resolve_key,
)
from oneroof.masking.suggestions import Suggestion, Suggestions, suggest
from oneroof.masking.transfer import CHUNK_PAGES, Export, Exporter, chunks, export, load

__all__ = [
    "CHUNK_PAGES",
    "DETERMINISTIC",
    "EMAIL_LENGTH",
    "FORMAT_RULES",
    "MIN_KEY_LENGTH",
    "RULE_KINDS",
    "Catalog",
    "Column",
    "ColumnProof",
    "Configured",
    "Export",
    "Exporter",
    "ForeignKey",
    "Masked",
    "Plan",
    "Relation",
    "Rule",
    "Suggestion",
    "Suggestions",
    "TablePlan",
    "UniqueKey",
    "as_text",
    "build",
    "check_expression",
    "chunks",
    "configured",
    "email_expression",
    "export",
    "export_query",
    "format_keeping",
    "hash_expression",
    "hash_stream_query",
    "key_source",
    "load",
    "load_statement",
    "parse_column",
    "parse_rule",
    "plan",
    "prove",
    "resolve_key",
    "shared_values",
    "suggest",
    "value_text",
]
