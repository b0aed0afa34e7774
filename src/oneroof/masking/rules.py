"""The rules as `[masking]` writes them: rule texts, column names, the key."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from oneroof.config import Config
from oneroof.errors import ConfigError

RULE_KINDS = ("email", "name", "phone", "digits", "hash", "null", "fixed", "shuffle", "sql")
DETERMINISTIC = frozenset({"email", "name", "phone", "digits", "hash"})
MIN_KEY_LENGTH = 16
EMAIL_LENGTH = 33  # 16 hex characters, "@", 8 hex characters, ".invalid"
HASH_LENGTH = 32
UNIQUE_HASH_LENGTH = 16  # 64 bits: below it, a masked column may lose its uniqueness
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "citext"})
HASH_TYPES = TEXT_TYPES | {"uuid", "int8", "int4", "int2", "bytea"}
FORMAT_RULES = {  # (letters, digits, keep the prefix)
    "name": (True, True, False),
    "phone": (False, True, True),
    "digits": (False, True, False),
}


# -- rules as written -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One masking rule: its kind and, for `fixed:` and `sql:`, its argument."""

    kind: str
    argument: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}" if self.kind in ("fixed", "sql") else self.kind

    @property
    def deterministic(self) -> bool:
        return self.kind in DETERMINISTIC


def parse_rule(text: str) -> Rule:
    """A rule from its text (`email`, `fixed:VALUE`, `sql:EXPR`, …); ValueError names why not."""
    if not isinstance(text, str):
        raise ValueError('a rule is a string such as "email" or "fixed:n/a"')
    kind, colon, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind in ("fixed", "sql") and colon:
        if kind == "sql":
            check_expression(argument)
            return Rule("sql", argument.strip())
        return Rule("fixed", argument)
    if kind in ("fixed", "sql"):
        raise ValueError(f"rule {kind!r} needs its value after a colon: {kind}:…")
    if colon or kind not in RULE_KINDS:
        raise ValueError(
            f"unknown masking rule {text!r}; use one of email, name, phone, digits, hash, "
            "null, fixed:VALUE, shuffle, sql:EXPR"
        )
    return Rule(kind)


def check_expression(expression: str) -> None:
    """Refuse (ValueError) an `sql:` rule that is not exactly one SQL expression.

    The expression is pasted into the SELECT that reads the table, so text that closes it
    and goes on (`1) as x from other_table --`) must not parse as one expression. The guard
    still classifies the whole statement on production: only plain reads of built-ins run.
    """
    import pglast
    from pglast import ast

    if not expression.strip():
        raise ValueError("sql: needs an expression over the row")
    if "\x00" in expression:
        raise ValueError("sql: contains a NUL byte")
    try:
        statements = pglast.parse_sql(f"SELECT ({expression})")
    except Exception as exc:  # pglast raises ParseError and a few others
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"sql: is not one SQL expression: {first}") from None
    statement = statements[0].stmt if len(statements) == 1 else None
    if not isinstance(statement, ast.SelectStmt) or len(statement.targetList or ()) != 1:
        raise ValueError("sql: is not one SQL expression over the row")
    for name in ast.SelectStmt.__slots__:  # type: ignore[attr-defined]
        # anything but the one target (a FROM, a WHERE, a UNION …) means the text went on
        if name not in ("targetList", "op", "limitOption") and getattr(statement, name, None):
            raise ValueError("sql: is not one SQL expression over the row")


_PART = re.compile(r'"((?:[^"]|"")+)"|([^."]+)')


def parse_column(text: str) -> tuple[str, str, str]:
    """(schema, table, column) of `"schema.table.column"`; parts fold like SQL identifiers.

    An unquoted part is lower-cased; a part in double quotes is taken as it is (`""` is a
    quote), so `public."Customer".email` names the table Customer.
    """
    parts: list[str] = []
    position = 0
    while position <= len(text):
        match = _PART.match(text, position)
        if match is None:
            raise ValueError(f"{text!r} is not schema.table.column")
        quoted, plain = match.groups()
        if quoted is not None:
            parts.append(quoted.replace('""', '"'))
        else:
            if plain != plain.strip() or not plain.strip():
                raise ValueError(f"{text!r} is not schema.table.column")
            parts.append(plain.lower())
        position = match.end()
        if position == len(text):
            break
        if text[position] != ".":
            raise ValueError(f"{text!r} is not schema.table.column")
        position += 1
    if len(parts) != 3:
        raise ValueError(
            f"{text!r} is not schema.table.column (write the key in quotes: "
            '"public.customers.email" = "email")'
        )
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Configured:
    """One rule as `[masking]` writes it, with where it is written."""

    schema: str
    table: str
    column: str
    rule: Rule
    key: str
    line: int | None

    @property
    def table_key(self) -> str:
        return f"{self.schema}.{self.table}"


def configured(cfg: Config) -> list[Configured]:
    """The rules of `[masking]`, parsed; `ConfigError` (exit 2) names the line of a bad one."""
    found: list[Configured] = []
    seen: dict[tuple[str, str, str], str] = {}
    for key, text in cfg.masking.rules.items():
        line = cfg.line_of("masking", key)
        try:
            schema, table, column = parse_column(key)
            rule = parse_rule(text)
        except ValueError as exc:
            raise ConfigError(f"masking.{key}: {exc}", file=cfg.file, line=line) from None
        if (schema, table, column) in seen:
            raise ConfigError(
                f"masking.{key}: the same column as {seen[(schema, table, column)]!r}",
                file=cfg.file,
                line=line,
            )
        seen[(schema, table, column)] = key
        found.append(Configured(schema, table, column, rule, key, line))
    return found


def resolve_key(cfg: Config) -> str:
    """The masking key (`[masking] key`: env:NAME or literal); `ConfigError` when unusable."""
    raw = cfg.masking.key
    line = cfg.line_of("masking", "key")
    if not raw:
        raise ConfigError(
            'masking.key: deterministic masking rules need a key: key = "env:MASK_KEY"',
            file=cfg.file,
            line=line or cfg.line_of("masking"),
        )
    value = raw
    if raw.startswith("env:"):
        name = raw[4:].strip()
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(
                f"masking.key: environment variable {name} is not set", file=cfg.file, line=line
            )
    if len(value) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"masking.key: the key has {len(value)} characters; use at least {MIN_KEY_LENGTH}"
            " (a short key can be guessed, and with it every mask recomputed)",
            file=cfg.file,
            line=line,
        )
    return value
