"""The masking SQL: built-in expressions only, composed with psycopg.sql, never with the key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from oneroof import connect
from oneroof.masking.rules import FORMAT_RULES, HASH_LENGTH, MIN_KEY_LENGTH

if TYPE_CHECKING:
    from oneroof.masking.planning import Column, TablePlan


KEY_ALIAS = "oneroof_k"


def call(name: str, *arguments: sql.Composable) -> sql.Composed:
    """A call of a built-in, schema-qualified so no function on the search path can be picked."""
    return sql.SQL("pg_catalog.{}({})").format(sql.SQL(name), sql.SQL(", ").join(arguments))


def literal(value: Any) -> sql.Literal:
    return sql.Literal(value)


def utf8(text: sql.Composable) -> sql.Composed:
    return call("convert_to", text, literal("UTF8"))


def hexed(data: sql.Composable) -> sql.Composed:
    return call("encode", data, literal("hex"))


def keyed_digest(function: str, domain: str, text: sql.Composable) -> sql.Composed:
    """The keyed hash of a value's text: `function(key || domain || text)` (bytea)."""
    key = sql.SQL("{}.k").format(sql.Identifier(KEY_ALIAS))
    return call(function, call("byteacat", key, utf8(call("textcat", literal(domain + ":"), text))))


def as_bits(text: sql.Composable) -> sql.Composed:
    """The bytes of an ASCII text as a bit string, so bytes can be combined bitwise."""
    return sql.SQL("({})::pg_catalog.varbit").format(
        call("textcat", literal("x"), hexed(utf8(text)))
    )


def key_source() -> sql.Composed:
    """The one-row subquery that reads the key from the transaction-local setting.

    Without a key of full length it has no row, so nothing is read: never a weak mask.
    """
    setting = call("current_setting", literal(connect.MASK_KEY_SETTING))
    return sql.SQL("(select {} as k where {} OPERATOR(pg_catalog.>=) {}) as {}").format(
        utf8(setting), call("length", setting), literal(MIN_KEY_LENGTH), sql.Identifier(KEY_ALIAS)
    )


def value_text(table: str, column: str) -> sql.Composed:
    return sql.SQL("({}.{})::pg_catalog.text").format(sql.Identifier(table), sql.Identifier(column))


def email_expression(text: sql.Composable) -> sql.Composed:
    """`<16 hex>@<8 hex>.invalid`: unique like the value, and addresses of one domain share
    one masked domain. `.invalid` is reserved: no mail to a masked address is delivered."""
    domain = call(
        "lower",
        sql.SQL('{} COLLATE "C"').format(
            call("reverse", call("split_part", call("reverse", text), literal("@"), literal(1)))
        ),
    )
    local = call("left", hexed(keyed_digest("sha256", "email", text)), literal(16))
    masked_domain = call("left", hexed(keyed_digest("sha256", "email-domain", domain)), literal(8))
    return call(
        "textcat",
        call("textcat", call("textcat", local, literal("@")), masked_domain),
        literal(".invalid"),
    )


def hash_expression(text: sql.Composable, column: Column) -> sql.Composed:
    """A keyed hash in the column's own type: hex text, uuid, integer or bytes."""
    digest = keyed_digest("sha256", "hash", text)
    if column.base == "bytea":
        return digest
    if column.base in ("int8", "int4", "int2"):
        bits = {"int8": 64, "int4": 32, "int2": 16}[column.base]
        number = sql.SQL("(({})::pg_catalog.bit({}))::pg_catalog.int{}").format(
            call("textcat", literal("x"), call("left", hexed(digest), literal(bits // 4))),
            sql.SQL(str(bits)),
            sql.SQL("8" if bits == 64 else "4"),
        )
        return call("int4mi", number, literal(32768)) if bits == 16 else number
    length = HASH_LENGTH if column.length is None else min(HASH_LENGTH, column.length)
    return call("left", hexed(digest), literal(length))


# Format-keeping masks work on the bytes of the value, all at once, as bit strings: per
# character SQL (a subquery over the characters) costs about ten times as much.
_LETTER_FIX_FROM = "@[\\]^_`{|}~\x7f"  # the 5-bit codes above Z and z
_LETTER_FIX_TO = "AEINRSaeinrs"


def format_keeping(
    text: sql.Composable, alias: str, *, letters: bool, digits: bool, prefix: bool, domain: str
) -> tuple[list[sql.Composable], sql.Composable]:
    """(laterals, expression) masking a text while keeping its length and format.

    Digits become keyed digits; with `letters`, letters become keyed letters of the same
    case; every other character stays, except that a non-ASCII character becomes a letter
    (`x` before masking) and, with `letters`, ``@[\\]^_`{|}~`` become letters. With `prefix`
    a leading run of `+`, `0` and spaces stays as it is (international and trunk prefixes).
    """
    a1, a2, a3, a4 = (sql.Identifier(f"{alias}_{n}") for n in range(1, 5))

    def ref(source: sql.Identifier, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(source, sql.Identifier(name))

    ascii_only = call("int4eq", call("octet_length", utf8(text)), call("length", text))
    normal = sql.SQL("case when {} then {} else {} end").format(
        ascii_only,
        text,
        call("regexp_replace", text, sql.SQL("E'[^\\\\x01-\\\\x7f]'"), literal("x"), literal("g")),
    )
    n, h, length = ref(a1, "n"), ref(a1, "h"), ref(a2, "l")
    laterals: list[sql.Composable] = [
        sql.SQL("lateral (select {} as n, {} as h offset 0) as {}").format(
            normal, hexed(keyed_digest("sha512", domain, text)), a1
        )
    ]
    second = [
        sql.SQL("{} as l").format(call("length", n)),
        sql.SQL("{} as v").format(as_bits(n)),
        # enough hex characters of the digest for two per byte, repeated for long values
        sql.SQL("{} as hh").format(
            call(
                "repeat",
                h,
                call("int4pl", literal(1), call("int4div", call("length", n), literal(64))),
            )
        ),
    ]
    if letters:
        upper = call("upper", sql.SQL('{} COLLATE "C"').format(n))
        lower = call("lower", sql.SQL('{} COLLATE "C"').format(n))
        second.append(sql.SQL("{} as x").format(call("bitxor", as_bits(upper), as_bits(lower))))
    if digits:
        # each digit d becomes d xor 0x40, so xor with the value leaves 0x40 at digits only
        second.append(
            sql.SQL("{} as t").format(
                call("translate", n, literal("0123456789"), literal("pqrstuvwxy"))
            )
        )
    laterals.append(
        sql.SQL("lateral (select {} offset 0) as {}").format(sql.SQL(", ").join(second), a2)
    )
    third: list[sql.Composable] = []
    hh, value = ref(a2, "hh"), ref(a2, "v")
    if letters:
        x = ref(a2, "x")
        # 0x20 marks a letter (upper and lower case differ there); spread it over 5 bits
        spread = call("bitshiftright", x, literal(1))
        for shift in (2, 3, 4, 5):
            spread = call("bitor", spread, call("bitshiftright", x, literal(shift)))
        third.append(sql.SQL("{} as ml").format(spread))
        third.append(
            sql.SQL("({})::pg_catalog.varbit as r").format(
                call(
                    "textcat",
                    literal("x"),
                    call("substr", hh, literal(1), call("int4mul", literal(2), length)),
                )
            )
        )
    if digits:
        # a value without digits (most names) skips the digit work
        has = call("textne", ref(a2, "t"), n)
        third.append(sql.SQL("{} as dg").format(has))
        # move the 0x40 of each digit to 0x01 (within its byte)
        marked = call("bitxor", as_bits(ref(a2, "t")), value)
        third.append(
            sql.SQL("case when {} then {} end as y").format(
                has, call("bitshiftright", marked, literal(6))
            )
        )
        # hex characters as bytes: their low 4 bits are 0-9 or 1-6, a digit either way
        third.append(
            sql.SQL("case when {} then {} end as rd").format(
                has, as_bits(call("substr", hh, literal(3), length))
            )
        )
        if prefix:
            kept = call(
                "int4mi", call("length", n), call("length", call("ltrim", n, literal("+0 ")))
            )
            third.append(sql.SQL("{} as p").format(call("int4mul", literal(8), kept)))
    laterals.append(
        sql.SQL("lateral (select {} offset 0) as {}").format(sql.SQL(", ").join(third), a3)
    )
    masked: sql.Composable = value

    def take(bits: sql.Composable, random: sql.Composable, mask: sql.Composable) -> sql.Composed:
        # the bits of `random` where `mask` is set, those of `bits` (named once) elsewhere
        return call(
            "bitor", call("bitand", bits, call("bitnot", mask)), call("bitand", random, mask)
        )

    if letters:
        masked = take(masked, ref(a3, "r"), ref(a3, "ml"))
    if digits:
        y = ref(a3, "y")
        md: sql.Composable = y
        for shift in (1, 2, 3):
            md = call("bitor", md, call("bitshiftleft", y, literal(shift)))
        if prefix:
            p = ref(a3, "p")
            zeros = sql.SQL('pg_catalog."substring"({}, 1, {})').format(call("bitxor", y, y), p)
            rest = sql.SQL('pg_catalog."substring"({}, {})').format(
                md, call("int4pl", p, literal(1))
            )
            md = call("bitcat", zeros, rest)
        laterals.append(sql.SQL("lateral (select {} as md offset 0) as {}").format(md, a4))
        masked = sql.SQL("case when {} then {} else {} end").format(
            ref(a3, "dg"), take(masked, ref(a3, "rd"), ref(a4, "md")), masked
        )
    out: sql.Composable = call(
        "convert_from", call("substr", call("varbit_send", masked), literal(5)), literal("UTF8")
    )
    if letters:
        out = call("translate", out, literal(_LETTER_FIX_FROM), literal(_LETTER_FIX_TO))
    expression = sql.SQL("case when {} then {} else {} end").format(
        call("int4eq", length, literal(0)), text, out
    )
    return laterals, expression


def export_query(table: TablePlan, pages: tuple[int, int | None] | None = None) -> sql.Composed:
    """`COPY (SELECT <every column, masked ones masked> FROM …) TO STDOUT` for one table.

    `pages` (first page, end page or None) reads one range of the table's pages: ranges read
    by sessions of one snapshot side by side (a TID range scan on PostgreSQL 14 and later).
    """
    alias = table.name
    relation = sql.Identifier(table.schema, table.name)
    base: sql.Composable = sql.SQL("only {} as {}").format(relation, sql.Identifier(alias))
    joins: list[sql.Composable] = []
    laterals: list[sql.Composable] = []
    outputs: list[sql.Composable] = []
    shuffles = [c for c, m in table.masked.items() if m.rule.kind == "shuffle"]
    if shuffles:
        row = sql.Identifier("oneroof_row")
        base = sql.SQL(
            "(select {}.*, pg_catalog.row_number() over () as {} from only {}) as {}"
        ).format(sql.Identifier(alias), row, relation, sql.Identifier(alias))
        for index, shuffled in enumerate(shuffles, start=1):
            source = sql.Identifier(f"oneroof_shuffle_{index}")
            joins.append(
                sql.SQL(
                    " join (select {} as oneroof_value, pg_catalog.row_number() over"
                    " (order by pg_catalog.random()) as {} from only {}) as {}"
                    " on {}.{} OPERATOR(pg_catalog.=) {}.{}"
                ).format(
                    sql.SQL("{}.{}").format(sql.Identifier(table.name), sql.Identifier(shuffled)),
                    row,
                    relation,
                    source,
                    source,
                    row,
                    sql.Identifier(alias),
                    row,
                )
            )
    ctes: list[sql.Composable] = []
    for index, column in enumerate(table.columns, start=1):
        entry = table.masked.get(column.name)
        reference = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column.name))
        if entry is None:
            outputs.append(reference)
            continue
        text = value_text(alias, column.name)
        kind = entry.rule.kind
        if kind == "email":
            outputs.append(email_expression(text))
        elif kind == "hash":
            outputs.append(hash_expression(text, column))
        elif kind in FORMAT_RULES:
            letters, digits, prefix = FORMAT_RULES[kind]
            more, expression = format_keeping(
                text,
                f"oneroof_m{index}",
                letters=letters,
                digits=digits,
                prefix=prefix,
                domain=kind,
            )
            laterals.extend(more)
            if not entry.group:
                outputs.append(expression)
                continue
            # a mask that is a production value of the column (or of those it must mask
            # alike) is masked once more, with another domain of the key
            out, seen, values = (
                sql.Identifier(f"oneroof_m{index}_{part}") for part in ("out", "seen", "values")
            )
            laterals.append(
                sql.SQL("lateral (select {} as v offset 0) as {}").format(expression, out)
            )
            laterals.append(
                sql.SQL(
                    'left join {} as {} on {}.v OPERATOR(pg_catalog.=) ({}.v COLLATE "C")'
                ).format(values, seen, seen, out)
            )
            ctes.append(sql.SQL("{} as ({})").format(values, production_values(entry.group)))
            again_laterals, again = format_keeping(
                text,
                f"oneroof_m{index}_again",
                letters=letters,
                digits=digits,
                prefix=prefix,
                domain=f"{kind}-again",
            )
            outputs.append(
                sql.SQL(
                    "case when {}.v is null then {}.v else (select {} from (select) as oneroof_one"
                    " {}) end"
                ).format(seen, out, again, _joined(again_laterals))
            )
        elif kind == "null":
            outputs.append(sql.SQL("null::pg_catalog.text"))
        elif kind == "fixed":
            outputs.append(
                sql.SQL("case when {} is null then null else {} end").format(
                    reference, literal(entry.rule.argument)
                )
            )
        elif kind == "shuffle":
            number = shuffles.index(column.name) + 1
            outputs.append(sql.SQL("oneroof_shuffle_{}.oneroof_value").format(sql.SQL(str(number))))
        else:  # sql: checked to be one expression; the guard classifies the whole statement
            outputs.append(sql.SQL("({})").format(sql.SQL(entry.rule.argument)))
    first: sql.Composable = sql.Composed([base, *joins])
    if any(m.rule.deterministic for m in table.masked.values()):
        laterals.insert(0, key_source())
    where: sql.Composable = sql.SQL("")
    if pages is not None and not shuffles:
        ctid = sql.SQL("{}.ctid").format(sql.Identifier(alias))
        bounds = [
            sql.SQL("{} OPERATOR(pg_catalog.>=) {}::pg_catalog.tid").format(
                ctid, literal(f"({pages[0]},0)")
            )
        ]
        if pages[1] is not None:
            bounds.append(
                sql.SQL("{} OPERATOR(pg_catalog.<) {}::pg_catalog.tid").format(
                    ctid, literal(f"({pages[1]},0)")
                )
            )
        where = sql.SQL(" where ") + sql.SQL(" and ").join(bounds)
    with_clause: sql.Composable = sql.SQL("")
    if ctes:
        with_clause = sql.SQL("with {} ").format(sql.SQL(", ").join(ctes))
    return sql.SQL("COPY ({}select {} from {}{}{}) TO STDOUT").format(
        with_clause, sql.SQL(", ").join(outputs), first, _joined(laterals), where
    )


def _joined(items: list[sql.Composable]) -> sql.Composable:
    """FROM items after the first, as a chain of joins (a LEFT JOIN's ON sees all before it)."""
    parts: list[sql.Composable] = []
    for item in items:
        text = item.as_string(None).lstrip().lower()
        parts.append(sql.SQL(" ") if text.startswith("left join") else sql.SQL(" cross join "))
        parts.append(item)
    return sql.Composed(parts)


def production_values(group: tuple[tuple[str, str, str], ...]) -> sql.Composed:
    """The distinct values (text, "C") of the columns a format-keeping mask must avoid."""
    selects = [
        sql.SQL(
            'select ({})::pg_catalog.text COLLATE "C" as v from only {} where {} is not null'
        ).format(sql.Identifier(column), sql.Identifier(schema, table), sql.Identifier(column))
        for schema, table, column in group
    ]
    return sql.SQL("select distinct u.v from ({}) as u").format(
        sql.SQL(" union all ").join(selects)
    )


def load_statement(table: TablePlan, encoding: str) -> sql.Composed:
    """The clone side: `COPY schema.table (columns) FROM STDIN` in the export's encoding."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT text, ENCODING {})").format(
        sql.Identifier(table.schema, table.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
        literal(encoding),
    )


def as_text(statement: sql.Composable) -> str:
    # identifiers and literals render the same on every connection; none is needed here
    return statement.as_string(None)


def hash_stream_query(schema: str, table: str, column: str, seed: str) -> sql.Composed:
    """The distinct values of a column as sorted keyed hashes (hex text), one per line."""
    text = sql.SQL("({})::pg_catalog.text").format(sql.Identifier(column))
    digest = call(
        "substr",
        call("sha256", utf8(call("textcat", literal(seed), text))),
        literal(1),
        literal(10),
    )
    return sql.SQL(
        "COPY (select {} from (select distinct {} as h from only {} where {} is not null) as d"
        " order by d.h) TO STDOUT"
    ).format(
        hexed(sql.SQL("d.h")),
        digest,
        sql.Identifier(schema, table),
        sql.Identifier(column),
    )
