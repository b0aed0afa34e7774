"""Masking: rules, the plan, masked clones, the proof, suggestions (real servers, no mocks).

The database tests build a small CRM on production: a parent table of people with a unique,
NOT NULL e-mail, a referencing table with a composite key on (e-mail, order number), a table
referencing that composite key, and a table without personal data. Every personal value is
distinctive (a random token inside), so a grep of the non-production server's log and data
files either finds it — a leak — or not.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_clone import remove_clone, run_cli
from oneroof import clone, config, masking, verdicts
from oneroof.errors import BadInput, ConfigError
from oneroof.workspace import Workspace as Ws

KEY = "test-masking-key-0123456789abcdef"
PEOPLE = 60

SCHEMA = """
create schema crm;
create table crm.customers (
    id bigint primary key,
    email text not null unique,
    full_name text,
    phone varchar(40),
    born date,
    city text not null,
    api_token text,
    note text,
    nickname text
);
create table crm.orders (
    customer_email text not null references crm.customers (email),
    order_no int not null,
    total numeric(10, 2),
    primary key (customer_email, order_no)
);
create table crm.order_lines (
    customer_email text not null,
    order_no int not null,
    line int not null,
    sku text not null,
    primary key (customer_email, order_no, line),
    foreign key (customer_email, order_no) references crm.orders
);
create table crm.products (sku text primary key, title text not null);
"""

TOML = """\
[production]
dsn = "env:ONEROOF_TEST_PROD_DSN"
statement_timeout = "60s"
[clone]
server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"
name = "{name}"
[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
[masking]
key = "env:ONEROOF_TEST_MASK_KEY"
"crm.customers.email" = "email"
"crm.customers.full_name" = "name"
"crm.customers.phone" = "phone"
"crm.customers.born" = "null"
"crm.customers.city" = "shuffle"
"crm.customers.api_token" = "hash"
"crm.customers.note" = "fixed:redacted"
"crm.customers.nickname" = "sql:upper(left(nickname, 1))"
"""


def toml_with(name: str, *rules: str, drop: tuple[str, ...] = ()) -> str:
    lines = [line for line in TOML.format(name=name).splitlines() if not line.startswith(drop)]
    return "\n".join([*lines, *rules]) + "\n"


def _people(token: str) -> list[dict[str, Any]]:
    people = []
    for n in range(1, PEOPLE + 1):
        people.append(
            {
                "id": n,
                "email": f"quill{token}{n:03d}@originals-{n % 4}.example",
                "full_name": f"Orvilla{token[:6]} Brandquist-{n:03d}",
                "phone": f"+44 7700 9{n:05d}",
                "born": f"19{50 + n % 40}-0{1 + n % 9}-1{n % 10}",
                "city": ["Leeds", "Turku", "Graz", "Porto"][n % 4],
                "api_token": f"tok_{token}{n:04d}",
                "note": f"called on {n}",
                "nickname": f"nick{n}",
            }
        )
    return people


@pytest.fixture
def crm(prod_server: Any, prod_db: str) -> dict[str, Any]:
    token = uuid.uuid4().hex[:12]
    people = _people(token)
    with prod_server.admin(prod_db) as conn:
        conn.execute(SCHEMA)
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into crm.customers values (%(id)s, %(email)s, %(full_name)s, %(phone)s,"
                " %(born)s, %(city)s, %(api_token)s, %(note)s, %(nickname)s)",
                people,
            )
        conn.execute(
            "insert into crm.orders select c.email, o, c.id * 10 + o from crm.customers c,"
            " generate_series(1, 3) o"
        )
        conn.execute(
            "insert into crm.order_lines select customer_email, order_no, l, 'sku' || l"
            " from crm.orders, generate_series(1, 2) l"
        )
        conn.execute("insert into crm.products values ('sku1', 'Kettle'), ('sku2', 'Teapot')")
        conn.execute("analyze")
    return {"db": prod_db, "token": token, "people": people}


@pytest.fixture
def name(nonprod_server: Any) -> Iterator[str]:
    value = f"m{uuid.uuid4().hex[:10]}_clone"
    try:
        yield value
    finally:
        remove_clone(nonprod_server, value)


@pytest.fixture
def workspace(make_workspace: Any, crm: dict[str, Any], name: str, monkeypatch: Any) -> Any:
    monkeypatch.setenv("ONEROOF_TEST_MASK_KEY", KEY)
    return make_workspace(crm["db"], TOML.format(name=name))


def _rows(server: Any, database: str, query: str) -> list[tuple[Any, ...]]:
    with server.admin(database) as conn:
        rows: list[tuple[Any, ...]] = conn.execute(query).fetchall()
    return rows


# -- pure: rules, names, the plan over a synthetic catalog -------------------------------------


def test_rules_parse_and_refuse_with_the_reason() -> None:
    assert masking.parse_rule("email") == masking.Rule("email")
    assert masking.parse_rule("fixed:n/a") == masking.Rule("fixed", "n/a")
    assert masking.parse_rule("fixed:") == masking.Rule("fixed", "")
    assert str(masking.parse_rule("sql:upper(x)")) == "sql:upper(x)"
    for bad, reason in [
        ("mail", "unknown masking rule"),
        ("email:x", "unknown masking rule"),
        ("fixed", "needs its value"),
        ("sql:", "needs an expression"),
        ("sql:1) as x from pg_roles --", "not one SQL expression"),
        ("sql:x from t", "not one SQL expression"),
        ("sql:1; drop table t", "not one SQL expression"),
        ("sql:1 union select 2", "not one SQL expression"),
    ]:
        with pytest.raises(ValueError, match=reason):
            masking.parse_rule(bad)
    assert masking.parse_column("public.customers.email") == ("public", "customers", "email")
    assert masking.parse_column('Public."Customer"."E.mail"') == ("public", "Customer", "E.mail")
    assert masking.parse_column('s."a""b".c') == ("s", 'a"b', "c")
    for bad in ("customers.email", "a.b.c.d", "a..c", "a.b. c"):
        with pytest.raises(ValueError, match=r"schema\.table\.column"):
            masking.parse_column(bad)


def _config(text: str) -> config.Config:
    return config.parse(text, Path("/nowhere/oneroof.toml"))


def test_config_errors_name_the_line_and_exit_2() -> None:
    base = '[production]\ndsn = "x"\n[masking]\nkey = "env:K"\n'
    cfg = _config(base + '"public.t.a" = "email"\npublic.t.b = "name"\n')
    assert cfg.masking.rules == {"public.t.a": "email", "public.t.b": "name"}
    assert "key" not in repr(cfg.masking)  # the key is never shown
    with pytest.raises(ConfigError) as info:
        masking.configured(_config(base + '"public.t.a" = "email"\n"public.t.b" = "mail"\n'))
    assert info.value.line == 6 and info.value.exit_code == 2
    assert "masking.public.t.b: unknown masking rule" in str(info.value)
    with pytest.raises(
        ConfigError, match=r"oneroof\.toml:5: masking\.t\.a: .* schema\.table\.column"
    ):
        masking.configured(_config(base + '"t.a" = "email"\n'))
    with pytest.raises(
        ConfigError, match=re.escape(":6: masking.public.t.a: the same column as 'public.T.a'")
    ):
        masking.configured(_config(base + '"public.T.a" = "email"\n"public.t.a" = "hash"\n'))
    with pytest.raises(ConfigError, match=r"oneroof.toml:\d+: clone.method: 'template'"):
        _config(
            base.replace("[masking]", '[clone]\nmethod = "template"\n[masking]')
            + '"a.b.c" = "null"\n'
        )


def test_the_key_is_resolved_only_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config('[production]\ndsn = "x"\n[masking]\nkey = "env:ONEROOF_K"\n"a.b.c" = "null"\n')
    monkeypatch.delenv("ONEROOF_K", raising=False)
    with pytest.raises(
        ConfigError, match=re.escape(":4: masking.key: environment variable ONEROOF_K")
    ):
        masking.resolve_key(cfg)
    monkeypatch.setenv("ONEROOF_K", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        masking.resolve_key(cfg)
    monkeypatch.setenv("ONEROOF_K", KEY)
    assert masking.resolve_key(cfg) == KEY
    nokey = _config('[production]\ndsn = "x"\n[masking]\n"a.b.c" = "email"\n')
    with pytest.raises(ConfigError, match="need a key"):
        masking.resolve_key(nokey)


def _catalog() -> masking.Catalog:
    def col(name: str, base: str = "text", **kw: Any) -> masking.Column:
        return masking.Column(
            name,
            kw.get("type", base),
            base,
            kw.get("length"),
            kw.get("not_null", False),
            kw.get("generated", False),
        )

    relations = {
        "s.parent": masking.Relation(
            "s", "parent", "r", 10, [], {c.name: c for c in [col("id", "int8"), col("email")]}
        ),
        "s.child": masking.Relation(
            "s",
            "child",
            "r",
            10,
            [],
            {c.name: c for c in [col("email"), col("n", "int4"), col("v", "text", generated=True)]},
        ),
        "s.events": masking.Relation("s", "events", "p", 0, [], {"email": col("email")}),
        "s.events_1": masking.Relation(
            "s", "events_1", "r", 5, ["s.events"], {"email": col("email")}
        ),
        "s.short": masking.Relation(
            "s", "short", "r", 1, [], {"code": col("code", "varchar", length=10)}
        ),
    }
    relations["s.events"].children.append("s.events_1")
    uniques = [
        masking.UniqueKey("s.parent", "parent_email_key", "unique", ("email",)),
        masking.UniqueKey("s.child", "child_pkey", "primary key", ("email", "n")),
        masking.UniqueKey("s.short", "short_code_key", "unique", ("code",)),
    ]
    fks = [
        masking.ForeignKey("child_email_fkey", "s.child", ("email",), "s.parent", ("email",), False)
    ]
    return masking.Catalog(relations, uniques, fks)


def _written(*rules: tuple[str, str]) -> list[masking.Configured]:
    found = []
    for line, (column, rule) in enumerate(rules, start=10):
        schema, table, name = masking.parse_column(column)
        found.append(
            masking.Configured(schema, table, name, masking.parse_rule(rule), column, line)
        )
    return found


def test_the_plan_carries_key_columns_across_foreign_keys_and_partitions() -> None:
    cfg = _config('[production]\ndsn = "x"\n')
    found = masking.build(
        cfg, _written(("s.child.email", "email"), ("s.events.email", "hash")), _catalog()
    )
    masked = {m.key: m for m in found.columns}
    # the child's rule masks the parent's key too, so every reference still matches
    assert masked["s.parent.email"].rule == masking.Rule("email")
    assert "child_email_fkey carries s.child.email" in masked["s.parent.email"].origin
    # a rule on a partitioned table masks its partitions, which hold the rows
    assert "s.events_1.email" in masked and "s.events" not in found.tables
    assert found.tables["s.child"].generated == ("v",)
    assert [c.name for c in found.tables["s.child"].columns] == ["email", "n"]
    assert found.exclude_patterns() == ['"s"."child"', '"s"."events_1"', '"s"."parent"']
    assert found.needs_key


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ((("s.parent.email", "phone"),), "would break unique parent_email_key"),
        ((("s.short.code", "fixed:x"),), "would break unique short_code_key"),
        ((("s.child.email", "shuffle"),), "would break primary key child_pkey"),
        ((("s.parent.email", "shuffle"),), "would break foreign key child_email_fkey"),
        ((("s.parent.email", "null"),), "would break foreign key child_email_fkey"),
        ((("s.child.email", "sql:lower(email)"),), "would break foreign key child_email_fkey"),
        ((("s.parent.email", "email"), ("s.child.email", "hash")), "would no longer match"),
        ((("s.parent.id", "email"),), "rule email masks text columns"),
        ((("s.short.code", "email"),), "holds 10"),
        ((("s.short.code", "hash"),), "too short to stay unique"),
        ((("s.child.v", "null"),), "generated column"),
        ((("s.child.nope", "null"),), "has no column nope"),
        ((("s.nope.x", "null"),), "production has no table s.nope"),
    ],
)
def test_a_rule_that_would_break_a_constraint_is_refused_naming_it(
    rules: tuple[tuple[str, str], ...], message: str
) -> None:
    cfg = _config('[production]\ndsn = "x"\n')
    with pytest.raises(BadInput, match=message) as info:
        masking.build(cfg, _written(*rules), _catalog())
    assert info.value.exit_code == 2 and info.value.line is not None


def test_the_masking_sql_names_everything_and_holds_no_key() -> None:
    cfg = _config('[production]\ndsn = "x"\n')
    found = masking.build(
        cfg, _written(("s.parent.email", "email"), ("s.parent.id", "hash")), _catalog()
    )
    text = masking.as_text(masking.export_query(found.tables["s.parent"]))
    assert text.startswith("COPY (select ") and text.endswith(") TO STDOUT")
    assert 'from only "s"."parent" as "parent"' in text
    assert "pg_catalog.current_setting('oneroof.mask_key')" in text
    assert KEY not in text and "%s" not in text
    load = masking.as_text(masking.load_statement(found.tables["s.child"], "UTF8"))
    assert load == 'COPY "s"."child" ("email", "n") FROM STDIN (FORMAT text, ENCODING \'UTF8\')'


def test_sorted_streams_merge_in_constant_memory() -> None:
    assert masking.shared_values([], []) == (0, 0, 0)
    assert masking.shared_values(["a", "c", "e"], ["b", "c", "d", "e", "f"]) == (3, 5, 2)
    assert masking.shared_values(iter(["a"]), iter(["b"])) == (1, 1, 0)


# -- on real servers ----------------------------------------------------------------------------


def _files_containing(root: Path, needles: list[bytes]) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle in needles:
            if needle in data:
                found[needle].append(str(path.relative_to(root)))
    return found


def test_clone_create_masks_keeps_keys_and_constraints_and_verify_proves_it(
    workspace: Any,
    crm: dict[str, Any],
    name: str,
    prod_server: Any,
    nonprod_server: Any,
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    people = crm["people"]
    with nonprod_server.admin() as conn:
        conn.execute("alter system set log_statement = 'all'")
        conn.execute("select pg_reload_conf()")
    try:
        info = clone.create(Ws(cfg, evidence))
        with nonprod_server.admin(name) as conn:
            conn.execute("checkpoint")
    finally:
        with nonprod_server.admin() as conn:
            conn.execute("alter system reset log_statement")
            conn.execute("select pg_reload_conf()")
    record = info.marker["masking"]
    assert {c["column"] for c in record["columns"]} == {
        *(
            f"crm.customers.{c}"
            for c in (
                "email",
                "full_name",
                "phone",
                "born",
                "city",
                "api_token",
                "note",
                "nickname",
            )
        ),
        "crm.orders.customer_email",
        "crm.order_lines.customer_email",
    }

    rows = _rows(
        nonprod_server,
        name,
        "select id, email, full_name, phone, born, city, api_token, note, nickname"
        " from crm.customers order by id",
    )
    assert len(rows) == PEOPLE
    originals = {p["email"] for p in people}
    for row, person in zip(rows, people, strict=True):
        _, email, full_name, phone, born, _city, api_token, note, nickname = row
        assert email not in originals and email.endswith(".invalid") and len(email) == 33
        # the name keeps its length and format: case, separators, digits as digits
        assert len(full_name) == len(person["full_name"]) and full_name != person["full_name"]
        shape = [c.isupper() for c in full_name], [c.isdigit() for c in full_name]
        expected = (
            [c.isupper() for c in person["full_name"]],
            [c.isdigit() for c in person["full_name"]],
        )
        assert shape == expected and full_name[len(full_name) - 4] == "-"
        assert phone.startswith("+") and len(phone) == len(person["phone"])
        assert phone != person["phone"] and phone[3] == " " and phone[8] == " "
        assert born is None and note == "redacted" and nickname == person["nickname"][0].upper()
        assert len(api_token) == 32 and api_token != person["api_token"]
    # one production value masks to one value: addresses of one domain share a masked one
    domains = {email.split("@")[1] for _, email, *_ in rows}
    assert len(domains) == 4
    # shuffle keeps the column's values, on other rows
    assert sorted(r[5] for r in rows) == sorted(p["city"] for p in people)

    # joins still match, through the composite key too, and every constraint holds
    joined = _rows(
        nonprod_server,
        name,
        "select count(*) from crm.order_lines l join crm.orders o using (customer_email, order_no)"
        " join crm.customers c on c.email = o.customer_email",
    )
    assert joined == [(PEOPLE * 6,)]
    constraints = _rows(
        nonprod_server,
        name,
        "select conname::text, contype::text, convalidated from pg_constraint"
        " where connamespace = 'crm'::regnamespace order by 1",
    )
    assert {c[1] for c in constraints} >= {"p", "u", "f"} and all(c[2] for c in constraints)
    with nonprod_server.admin(name) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "insert into crm.customers select id + 1000, email, '', '', null, 'x'"
            " from crm.customers limit 1"
        )
    with nonprod_server.admin(name) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("insert into crm.orders values ('ghost@nowhere.invalid', 1, 1)")
    # tables without personal data are copied as they are
    assert _rows(nonprod_server, name, "select * from crm.products order by 1") == _rows(
        prod_server, crm["db"], "select * from crm.products order by 1"
    )

    # no original value reached the non-production server: its log and its data files
    needles = [p[k].encode() for p in people for k in ("email", "full_name", "phone", "api_token")]
    assert nonprod_server.log_path is not None
    log = nonprod_server.log_path.read_bytes()
    assert b"COPY" in log and b"crm.customers" in log  # log_statement = all was on
    assert [n for n in needles if n in log] == []
    data_dir = nonprod_server.log_path.parent / "data"
    hits = _files_containing(data_dir, [*needles, rows[0][1].encode()])
    assert hits.pop(rows[0][1].encode()), "the grep finds the masked values"
    assert {n: where for n, where in hits.items() if where} == {}
    # verify: committed state as masked, other columns as production's, 0 production values
    result = clone.verify(Ws(cfg, evidence))
    assert result.ok, result.reasons
    points = {p.name: p for p in result.points}
    assert "3 masked table(s) as they were masked" in points["committed_state"].detail
    proof = points["masking"]
    assert proof.data["masked"] == 9 and proof.data["present"] == 0 and proof.data["proven"]
    assert proof.detail.startswith("9 columns masked, 0 production values present")
    assert "shuffled (production's values on other rows): crm.customers.city" in proof.detail
    verdict = verdicts.isolation_verdict(
        result, result, {"app_roles": False, "trigger_patterns": False}, name
    )
    assert "9 columns masked, 0 production values present" in verdict.headline

    # beyond the scan budget a column is reported as not checked, never as proven
    ws = Ws(cfg, evidence)
    with ws.production() as production, ws.clone(name) as session:
        proofs = masking.prove(production, session, record["columns"], 0)
    assert proofs and not any(p.checked for p in proofs)
    assert {p.note.split(":")[0] for p in proofs} == {"not checked", "shuffled"}
    ws.close()

    # a masked value changed by hand on the clone is caught
    with nonprod_server.admin(name) as conn:
        conn.execute(
            "update crm.customers set full_name = %s where id = 1", (people[0]["full_name"],)
        )
    broken = clone.verify(Ws(cfg, evidence))
    failing = {p.name: p for p in broken.points if not p.ok}
    assert set(failing) == {"committed_state", "masking"}
    assert "crm.customers.full_name: 1 of its" in failing["masking"].detail

    # the key is in no statement, no audit record, nowhere in the evidence store
    assert KEY.encode() not in cfg.evidence_path.read_bytes()
    audit = evidence.records("audit")
    copies = [
        r for r in audit if (r.sql or "").startswith("COPY (") and "mask_key" in (r.sql or "")
    ]
    assert len(copies) == 3 and {r.outcome for r in copies} == {"sent"}
    assert any(
        r.sql == "select pg_catalog.length(pg_catalog.set_config('oneroof.mask_key', %s, true)) > 0"
        for r in audit
    )
    dumps = [r.sql or "" for r in audit if "pg_dump" in (r.sql or "")]
    assert '--exclude-table-data="crm"."customers"' in dumps[0] and "--no-statistics" in dumps[0]


def test_masks_are_the_same_in_every_run_unless_one_would_be_a_production_value(
    workspace: Any, crm: dict[str, Any], name: str, prod_server: Any, nonprod_server: Any
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    query = "select email, full_name, phone, api_token from crm.customers order by id"
    clone.create(Ws(cfg, evidence))
    first = _rows(nonprod_server, name, query)
    clone.drop(Ws(cfg, evidence))
    clone.create(Ws(cfg, evidence))
    assert _rows(nonprod_server, name, query) == first
    clone.reset(Ws(cfg, evidence))
    assert _rows(nonprod_server, name, query) == first
    clone.drop(Ws(cfg, evidence))

    # production gains people whose real phone and name are what 1 and 2 masked to: a
    # format-keeping mask never lands on a production value, so those two are masked again
    with prod_server.admin(crm["db"]) as conn:
        conn.execute(
            "insert into crm.customers (id, email, full_name, phone, city)"
            " values (1001, 'a@b.example', %s, %s, 'Graz')",
            (first[1][1], first[0][2]),
        )
    clone.create(Ws(cfg, evidence))
    again = _rows(nonprod_server, name, query)
    assert again[:2] != first[:2] and again[2:PEOPLE] == first[2:PEOPLE]
    assert again[0][2] != first[0][2] and again[0][:2] == first[0][:2]
    assert again[1][1] != first[1][1] and again[1][2:] == first[1][2:]
    assert len(again[0][2]) == len(first[0][2])
    result = clone.verify(Ws(cfg, evidence))
    assert result.ok, result.reasons


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('"crm.customers.email" = "phone"', "would break unique customers_email_key"),
        ('"crm.customers.city" = "null"', "would break its NOT NULL"),
        ('"crm.orders.order_no" = "email"', "rule email masks text columns"),
        ('"crm.customers.emial" = "email"', "crm.customers has no column emial"),
        ('"crm.orders.customer_email" = "hash"', "would no longer match"),
    ],
)
def test_a_bad_rule_is_exit_2_naming_it_and_nothing_is_made(
    workspace: Any,
    name: str,
    nonprod_server: Any,
    capsys: pytest.CaptureFixture[str],
    rule: str,
    message: str,
) -> None:
    column = rule.split('"')[1]
    text = toml_with(name, rule, drop=(f'"{column}"',))
    workspace.write(text)
    line = text.splitlines().index(rule) + 1
    code, _, err = run_cli(["--workspace", str(workspace.path), "masking", "plan"], capsys)
    assert code == 2, err
    assert message in err and f"oneroof.toml:{line}:" in err
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    assert code == 2 and message in err
    with nonprod_server.admin() as conn:
        assert conn.execute("select from pg_database where datname = %s", (name,)).fetchall() == []


def test_an_sql_rule_is_checked_by_the_guard(
    workspace: Any, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace.write(
        toml_with(
            name, '"crm.customers.note" = "sql:pg_sleep(1)::text"', drop=('"crm.customers.note"',)
        )
    )
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    assert code == 3 and "refused on production: the masking of crm.customers" in err
    assert "pg_sleep" in err and "oneroof.toml:" in err  # the rule's line, to fix it
    refused = [r for r in workspace.evidence().records("audit") if r.outcome == "refused"]
    assert refused and "pg_sleep" in (refused[0].sql or "")


def test_suggest_points_at_personal_columns_and_prints_no_value(
    workspace: Any, crm: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--workspace", str(workspace.path), "masking", "suggest"]
    code, out, _ = run_cli([*base, "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    found = {s["column"]: s for s in document["suggestions"]}
    assert found["crm.customers.email"]["rule"] == "email"
    assert found["crm.customers.email"]["configured"] == "email"
    assert found["crm.customers.phone"]["rule"] == "phone"
    assert found["crm.customers.full_name"]["rule"] == "name"
    assert found["crm.customers.born"]["rule"] == "null"
    assert found["crm.customers.api_token"]["rule"] == "hash"
    assert found["crm.orders.customer_email"]["rule"] == "email"
    assert "crm.products.sku" not in found and "crm.orders.total" not in found
    assert '"crm.customers.email" = "email"' in document["toml"]
    code, out, _ = run_cli(base, capsys)
    assert code == 0 and "[masking]" in out and 'key = "env:MASK_KEY"' in out
    for person in crm["people"]:
        assert person["email"] not in out and person["email"] not in document["toml"]


def test_plan_lists_what_carried_each_rule(
    workspace: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["--workspace", str(workspace.path), "masking", "plan", "--json"], capsys
    )
    assert code == 0
    columns = {c["column"]: c for c in json.loads(out)["columns"]}
    assert columns["crm.orders.customer_email"]["origin"] == (
        "orders_customer_email_fkey carries crm.customers.email"
    )
    assert (
        "carries crm.orders.customer_email" in columns["crm.order_lines.customer_email"]["origin"]
    )
